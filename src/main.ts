#!/usr/bin/env bun
import { type CAC, cac } from "cac";
import { BangerError, exitCodeFor, toBangerError } from "./errors.ts";
import { printable } from "./printable.ts";
import { lazy } from "./lazy.ts";
import { BUILD_ID, VERSION } from "./version.ts";

/** Loaded on first use, so parsing argv and `--help` cost nothing more. */
const client = lazy(() => import("./modes/client.ts"));
/** `vm list` and `vm show`: one call to the daemon, without the command table's modules. */
const reads = lazy(() => import("./cli/read-cmds.ts"));

const json = "--json" as const;

/** The one command table. Each action turns options into a typed object and calls modes/client.ts. */
export function buildCli() {
  const cli = cac("banger");
  baseCommands(cli);
  hostKernelCommands(cli);
  imageCacheCommands(cli);
  vmCreateCommands(cli);
  vmLifecycleCommands(cli);
  vmInspectCommands(cli);
  vmAccessCommands(cli);
  cli.help();
  cli.version(VERSION);
  return cli;
}

/** Commands: version, doctor, completion, config, daemon. */
function baseCommands(cli: CAC) {
  cli
    .command("version", "Print version and build id")
    .option(json, "JSON output")
    .action((o) => printVersion(o));
  cli
    .command("doctor", "Check this host's prerequisites")
    .option(json, "JSON output")
    .action((o) => client.doctor(o));
  cli.command("completion <shell>", "Print shell completion (bash, zsh or fish)").action((shell) => client.completion(cli, String(shell)));

  cli
    .command("config show", "Print the effective configuration")
    .option(json, "JSON output")
    .action((o) => client.configShow(o));
  cli.command("config path", "Print the config file path").action(() => client.configPath());

  cli
    .command("daemon status", "Show the daemon (starting it if needed)")
    .option(json, "JSON output")
    .action((o) => client.daemonStatus(o));
  cli.command("daemon stop", "Stop the daemon (VMs keep running)").action(() => client.daemonStop());
  cli
    .command("daemon logs", "Print the daemon log")
    .option("-f, --follow", "Follow")
    .option("-n, --lines <n>", "Lines", { default: 100 })
    .action((o) => client.daemonLogs(o));
  cli.command("daemon run", "Run the daemon in the foreground (started automatically)").action(() => client.daemonRun());
}

/** Commands: host setup and kernels. */
function hostKernelCommands(cli: CAC) {
  cli
    .command("host setup", "Create the bridge, NAT rules and TAP pool (needs root)")
    .option("--systemd", "Also install a systemd unit so setup survives reboot (it runs a root-owned copy of banger and of your config)")
    .option("--owner <uid:gid>", "Who owns the TAPs (default: the user who ran sudo, else you)")
    .action((o) => client.hostSetup(o));
  cli.command("host teardown", "Remove everything host setup made (needs root)").action(() => client.hostTeardown());
  cli
    .command("host status", "Show the host network setup")
    .option(json, "JSON output")
    .action((o) => client.hostStatus(o));

  cli
    .command("kernel list", "List kernels")
    .option(json, "JSON output")
    .action((o) => client.kernelList(o));
  cli
    .command("kernel show <name>", "Show a kernel")
    .option(json, "JSON output")
    .action((n, o) => client.kernelShow(String(n), o));
  cli
    .command("kernel pull <name>", "Download a kernel from the catalog (sha256 verified)")
    .option(json, "JSON events")
    .action((n, o) => client.kernelPull(String(n), o));
  cli
    .command("kernel import <path>", "Register a local vmlinux (plain or .zst)")
    .option("--name <name>", "Kernel name")
    .option("--force", "Replace an existing kernel")
    .action((p, o) => client.kernelImport(String(p), o));
  cli
    .command("kernel build", "Compile a kernel from the distro's kernel source package")
    .option("--name <name>", "Kernel name")
    .option("--source <dir>", "Where the linux-source-* tarball is (default /usr/src)")
    .option(json, "JSON events")
    .action((o) => client.kernelBuild(o));
  cli.command("kernel delete <name>", "Delete a kernel").action((n) => client.kernelDelete(String(n)));
}

/** Commands: images and the warm-start cache. */
function imageCacheCommands(cli: CAC) {
  cli
    .command("image list", "List images")
    .option(json, "JSON output")
    .action((o) => client.imageList(o));
  cli
    .command("image show <name>", "Show an image")
    .option(json, "JSON output")
    .action((n, o) => client.imageShow(String(n), o));
  cli
    .command("image pull <name>", "Download an image from the catalog (sha256 verified)")
    .option(json, "JSON events")
    .action((n, o) => client.imagePull(String(n), o));
  cli
    .command("image import <source>", "Import an OCI image (layout dir, docker save or oci-archive tarball)")
    .option("--name <name>", "Image name")
    .option("--kernel <kernel>", "Kernel to pair")
    .option("--kernel-from <image>", "Boot it with a built image's own kernel and add that kernel's modules")
    .option(json, "JSON events")
    .action((s, o) => client.imageImport(String(s), o));
  cli
    .command("image build", "Build a Debian image with mmdebstrap; it brings its own kernel (Debian's cloud kernel, modules included)")
    .option("--name <name>", "Image name")
    .option("--packages <list>", "Extra Debian packages to install, comma-separated (e.g. build-essential,nodejs)")
    .option("--kernel <kernel>", "Boot this image's VMs with a registered kernel instead of its own")
    .option(json, "JSON events")
    .action((o) => client.imageBuild(o));
  cli.command("image delete <name>", "Delete an image (refused while VMs use it)").action((n) => client.imageDelete(String(n)));
  cli
    .command("cache list", "List the warm-start goldens (saved ready VMs that `vm create` restores instead of booting)")
    .option(json, "JSON output")
    .action((o) => client.cacheList(o));
  cli
    .command("cache prune", "Remove stale goldens and those beyond warm_cache")
    .option("--all", "Remove every golden")
    .option(json, "JSON output")
    .action((o) => client.cachePrune(o));
}

/** The options `vm create` and `vm run` share: what the new VM is. */
function createOpts(c: ReturnType<CAC["command"]>) {
  return c
    .option("--name <name>", "VM name (DNS-safe; becomes <name>.vm)")
    .option("--image <image>", "Image")
    .option("--kernel <kernel>", "Kernel")
    .option("--cpus <n>", "vCPUs")
    .option("--memory <mib>", "Memory in MiB")
    .option("--disk <size>", "Work disk size, e.g. 8G (a warm start grows its golden's smaller disk online)")
    .option("--net <policy>", "Network policy: none (default), nat, or allow:<domains,*.domains,CIDR[:port]>")
    .option("--nat", "Same as --net nat")
    .option("--group <name>", "Guests reach each other only within one group")
    .option("--cold", "Boot even when a warm-start golden for these settings is kept");
}

/** Commands: create, run. */
function vmCreateCommands(cli: CAC) {
  createOpts(cli.command("vm create", "Create and start a VM"))
    .option(json, "JSON events")
    .action((o) => client.vmCreate(o));
  createOpts(
    cli.command(
      "vm run [...cmd]",
      "Create (or start) a VM, bring this directory's current tree to /root/repo, run a command in the matching directory there (or print next steps)",
    ),
  )
    .option("--from <path>", "Directory or repo to bring (default: current directory)")
    .option("--full-copy", "First copy: everything, ignored files and submodules included")
    .option("--cwd <dir>", "Where the command runs in the guest: relative to /root/repo, or absolute")
    .option("--replace", "Discard the guest's own changes in /root/repo and bring the host's tree")
    .option("--keep", "Run on the guest's tree as it is, without bringing the host's changes")
    .option("--no-workspace", "Copy nothing; run in /root")
    .action((cmd, o) => client.vmRun([...cmd, ...(o["--"] ?? [])], o));
}

/** Commands: start … delete, set. */
function vmLifecycleCommands(cli: CAC) {
  cli
    .command("vm start <...refs>", "Start VMs (a suspended VM resumes from its saved state)")
    .option("--cold", "Boot a suspended VM instead of restoring it (its saved memory is discarded)")
    .action((r, o) => client.vmFanout("vm.start", r, o.cold ? { cold: true } : {}));
  cli.command("vm pause <...refs>", "Freeze VMs' vCPUs (RAM stays held)").action((r) => client.vmFanout("vm.pause", r));
  cli
    .command("vm resume <...refs>", "Resume paused or suspended VMs, every process as it was")
    .option("--cold", "When the saved state cannot be restored here, boot cold instead")
    .action((r, o) => client.vmFanout("vm.resume", r, o.cold ? { cold: true } : {}));
  cli.command("vm suspend <...refs>", "Save VMs' memory and device state to disk and end their VMM").action((r) => client.vmFanout("vm.suspend", r));
  cli.command("vm stop <...refs>", "Stop VMs (graceful, then forced)").action((r) => client.vmFanout("vm.stop", r));
  cli.command("vm restart <...refs>", "Restart VMs").action((r) => client.vmFanout("vm.restart", r));
  cli.command("vm kill <...refs>", "Kill VMs").action((r) => client.vmFanout("vm.kill", r));
  cli
    .command("vm delete <...refs>", "Delete VMs and everything they own")
    .option("--force", "Stop running VMs first")
    .action((r, o) => client.vmFanout("vm.delete", r, { force: Boolean(o.force) }));
  cli
    .command("vm set <...refs>", "Change cpus/memory (next start), grow the disk, change the network policy or group (at once)")
    .option("--cpus <n>", "vCPUs")
    .option("--memory <mib>", "Memory in MiB")
    .option("--disk <size>", "Grow the work disk to this size")
    .option("--net <policy>", "Network policy: none, nat, or allow:<domains,*.domains,CIDR[:port]>")
    .option("--nat", "Same as --net nat")
    .option("--no-nat", "Same as --net none")
    .option("--group <name>", 'Join a group ("" leaves it); guests reach each other only within one group')
    .action((r, o) => client.vmSet(r, o));
}

/** Commands: fork, snapshots, list, show, logs, stats, health, ports. */
function vmInspectCommands(cli: CAC) {
  cli
    .command("vm fork <ref>", "Running copies of a running VM as it is now, each with its own address, name and keys")
    .option("--name <name>", "Name of the one copy")
    .option("--count <k>", "How many copies (named <ref>-f1, -f2, ...)")
    .option(json, "JSON output")
    .action((r, o) => client.vmFork(String(r), o));
  cli
    .command("vm snapshot create <ref> [name]", "Snapshot a VM's disks (and with --memory its memory and device state)")
    .option("--memory", "Also save memory and device state: a restore continues from this very moment")
    .option(json, "JSON output")
    .action((r, n, o) => client.vmSnapshot("create", String(r), n === undefined ? undefined : String(n), o));
  cli
    .command("vm snapshot list <ref>", "List a VM's snapshots")
    .option(json, "JSON output")
    .action((r, o) => client.vmSnapshot("list", String(r), undefined, o));
  cli
    .command("vm snapshot restore <ref> <name>", "Put a VM back to a snapshot (the current state is lost)")
    .option(json, "JSON output")
    .action((r, n, o) => client.vmSnapshot("restore", String(r), String(n), o));
  cli
    .command("vm snapshot delete <ref> <name>", "Delete a snapshot and free its space")
    .option(json, "JSON output")
    .action((r, n, o) => client.vmSnapshot("delete", String(r), String(n), o));
  cli
    .command("vm list", "List VMs")
    .alias("vm ls")
    .option(json, "JSON output")
    .action((o) => reads.vmList(o));
  cli
    .command("vm show <ref>", "Show a VM")
    .option(json, "JSON output")
    .action((r, o) => reads.vmShow(String(r), o));
  cli
    .command("vm logs <ref>", "Serial console and VMM log")
    .option("-f, --follow", "Follow")
    .option("-n, --lines <n>", "Lines", { default: 200 })
    .action((r, o) => client.vmLogs(String(r), o));
  cli
    .command("vm stats [ref]", "CPU, memory, disk and uptime")
    .option(json, "JSON output")
    .action((r, o) => client.vmStats(r === undefined ? undefined : String(r), o));
  cli
    .command("vm health <ref>", "Ask the guest agent")
    .option(json, "JSON output")
    .action((r, o) => client.vmHealth(String(r), o));
  cli
    .command("vm ports <ref>", "Listening ports in the guest, as URLs where they speak HTTP(S)")
    .option(json, "JSON output")
    .action((r, o) => client.vmPorts(String(r), o));
}

/** Commands: ssh, exec, cp, workspace, mcp, ssh-config. */
function vmAccessCommands(cli: CAC) {
  cli
    .command("vm ssh <ref> [...cmd]", "Shell in the VM, or run a command and exit with its code")
    .action((r, cmd, o) => client.vmSsh(String(r), [...cmd, ...(o["--"] ?? [])]));
  cli
    .command("vm exec <ref> [...cmd]", "Run a command through the guest agent (no ssh): stdin, stdout, stderr and the exit code")
    .option("-t, --tty", "Give the command a terminal (size and resizes follow this one)")
    .option("-e, --env <NAME=VALUE>", "Set an environment variable (repeatable)")
    .option("--cwd <dir>", "Working directory in the guest (default: the user's home)")
    .option("--user <user>", "Guest user to run as (default root)")
    .example("banger vm exec web -- sh -c 'make test'")
    .example("banger vm exec web --tty -- bash")
    .action((r, cmd, o) => client.vmExec(String(r), [...cmd, ...(o["--"] ?? [])], o));
  cli
    .command("vm cp <...paths>", "Copy files between the host and a VM: SRC... DST, with <vm>:/path for the guest side")
    .option("-r, --recursive", "Copy directories (modes and symlinks kept)")
    .example("banger vm cp -r ./site web:/srv/")
    .example("banger vm cp web:/var/log/syslog ./")
    .action((a, o) => client.vmCp(a.map(String), o));
  cli
    .command("vm workspace prepare <ref>", "Copy a repo's working tree and history to /root/repo")
    .option("--from <path>", "Repo (default: current directory)")
    .option("--full-copy", "Copy everything, ignored files and submodules included")
    .option("--replace", "Discard what is in /root/repo already")
    .action((r, o) => client.workspacePrepare(String(r), o));
  cli
    .command("vm workspace sync <ref>", "Bring the host's current tree into /root/repo (only what changed; refuses to overwrite the guest's own work)")
    .option("--from <path>", "Directory or repo (default: current directory)")
    .option("--replace", "Discard the guest's own changes")
    .action((r, o) => client.workspaceSync(String(r), o));
  cli
    .command("vm workspace export <ref>", "Bring the guest's work back as a branch (or a patch)")
    .option("--to <path>", "Host repo (default: current directory)")
    .option("--branch <name>", "Branch name (default banger/<vm>)")
    .option("--patch <file>", "Write a patch file instead of a branch")
    .option("--force", "Overwrite an existing branch")
    .action((r, o) => client.workspaceExport(String(r), o));

  cli.command("mcp", "Serve the Model Context Protocol on stdio (register it in your coding agent; see README)").action(() => client.mcp());

  cli.command("ssh-config install", "Add `Host *.vm` to ~/.ssh/config (marked Include)").action(() => client.sshConfig("install"));
  cli.command("ssh-config uninstall", "Remove banger's Include from ~/.ssh/config").action(() => client.sshConfig("uninstall"));
  cli.command("ssh-config show", "Print banger's ssh config").action(() => client.sshConfig("show"));
  cli
    .command("ssh-config proxy <host> <port>", "ProxyCommand helper for `ssh <name>.vm` (used by the ssh config)")
    .action((h, p) => client.sshConfig("proxy", [String(h), String(p)]));
}

/** `banger version` needs nothing beyond this file: it is the baseline of the CLI's start time. */
/** `version`, `version --json`, `--version` or `-v` alone. */
function isVersionCall(argv: string[]): boolean {
  if (argv.length === 1) return argv[0] === "version" || argv[0] === "--version" || argv[0] === "-v";
  return argv.length === 2 && argv[0] === "version" && argv[1] === "--json";
}

/**
 * `vm list`, `vm ls` or `vm show REF`, alone or with a trailing --json: the commands scripts and
 * prompts poll, answered like the version before the command table is built.
 */
function readCall(argv: string[]): (() => Promise<void>) | null {
  const json = argv.at(-1) === "--json";
  const a = json ? argv.slice(0, -1) : argv;
  if (a[0] !== "vm") return null;
  if (a.length === 2 && (a[1] === "list" || a[1] === "ls")) return () => reads.vmList({ json });
  if (a.length === 3 && a[1] === "show" && !a[2]!.startsWith("-")) return () => reads.vmShow(a[2]!, { json });
  return null;
}

function printVersion(o: { json?: boolean }) {
  // console.log, not process.stdout: building that stream would triple the cost of `banger version`.
  console.log(o.json ? JSON.stringify({ version: VERSION, buildId: BUILD_ID }, null, 2) : `banger ${VERSION} (build ${BUILD_ID})`);
}

/**
 * cac parses argv once for every command in the table (a few ms for ours); when argv names a
 * command, the table shows cac only that one while it parses (the result is the same: no other
 * command matches). Returns what puts the whole table back (completion and help read it).
 */
function tryOnly(cli: ReturnType<typeof buildCli>, name: string): () => void {
  const all = cli.commands;
  cli.commands = all.filter((c) => c.isMatched(name));
  return () => {
    cli.commands = all;
  };
}

/** Joins "vm create" style words into one token, because cac matches commands on one word. */
export function joinCommandWords(argv: string[], names: Set<string>): string[] {
  for (const n of [3, 2]) {
    const candidate = argv.slice(0, n).join(" ");
    if (argv.length >= n && names.has(candidate)) return [candidate, ...argv.slice(n)];
  }
  return argv;
}

/** Every proper prefix of a multi-word command ("vm", "vm workspace"): words that only open a group. */
function commandGroups(names: Set<string>): Set<string> {
  const groups = new Set<string>();
  for (const n of names) {
    const words = n.split(" ");
    for (let i = 1; i < words.length; i++) groups.add(words.slice(0, i).join(" "));
  }
  return groups;
}

/** For argv that names a group but no command: its help, or a usage error naming the unknown word. */
async function groupOnly(cli: ReturnType<typeof buildCli>, argv: string[], groups: Set<string>): Promise<number | null> {
  for (const n of [2, 1]) {
    const group = argv.slice(0, n).join(" ");
    if (argv.length < n || !groups.has(group)) continue;
    const next = argv[n];
    if (next !== undefined && !next.startsWith("-")) {
      throw new BangerError("invalid_argument", `unknown command: banger ${group} ${next}`, { hint: `Run \`banger ${group} --help\`.` });
    }
    return client.groupHelp(cli, group);
  }
  return null;
}

async function main(argv: string[]): Promise<number> {
  // The root entry point sudo allows (see host setup); not a user command, so not in --help.
  if (argv[0] === "net-apply" && argv.length === 2) return (await import("./cli/host-cmds.ts")).netApply(argv[1]!);
  // A hidden mode: the daemon runs heavy image imports in a child process of this program.
  if (argv[0] === "__import-worker") return (await import("./images/import-worker.ts")).runImportWorker();
  // Answered before the command table is built: the version is what scripts ask most often.
  if (isVersionCall(argv)) return (printVersion({ json: argv.includes("--json") }), 0);
  const read = readCall(argv);
  if (read) return (await read(), 0);
  const cli = buildCli();
  const names = new Set(cli.commands.flatMap((c) => [c.name, ...c.aliasNames]));
  const args = joinCommandWords(argv, names);
  if (args.length === 1 && (args[0] === "-v" || args[0] === "--version")) {
    printVersion({});
    return 0;
  }
  if (!names.has(args[0] ?? "")) {
    const shown = await groupOnly(cli, argv, commandGroups(names));
    if (shown !== null) return shown;
  }
  const restore = names.has(args[0] ?? "") && !args.includes("--help") && !args.includes("-h") ? tryOnly(cli, args[0]!) : () => {};
  try {
    cli.parse(["banger", "banger", ...args], { run: false });
  } catch (err) {
    throw new BangerError("invalid_argument", (err as Error).message, { hint: "Run `banger --help`." });
  } finally {
    restore();
  }
  // cac has printed the help or the version and left no command matched.
  if (cli.options.help || cli.options.version) return 0;
  if (!cli.matchedCommand) {
    if (args.length && !args[0]!.startsWith("-")) {
      throw new BangerError("invalid_argument", `unknown command: ${args[0]}`, { hint: "Run `banger --help` for the command list." });
    }
    if (!args.length) cli.outputHelp();
    return 0;
  }
  const code = await cli.runMatchedCommand();
  return typeof code === "number" ? code : 0;
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      const e = toBangerError(err);
      // Messages can carry guest or image text (agent errors, entry names): never raw escapes.
      process.stderr.write(`banger: ${printable(e.message, { lines: true })}\n`);
      if (e.hint) process.stderr.write(`hint: ${printable(e.hint, { lines: true })}\n`);
      if (e.code === "internal" && process.env.BANGER_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
      process.exit(exitCodeFor(e.code));
    },
  );
}
