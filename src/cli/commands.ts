import type { CAC } from "cac";
import { existsSync, readFileSync, statSync, watch } from "node:fs";
import { basename, resolve } from "node:path";
import { loadConfig, renderConfig } from "../config.ts";
import { BangerError } from "../errors.ts";
import { DNS_FIX } from "../host/dns-hint.ts";
import { resolvePaths } from "../host/paths.ts";
import { hostRunner } from "../host/runner.ts";
import { MAX_TAIL_BYTES, tailLines } from "../host/tail.ts";
import { printable } from "../printable.ts";
import { call, DaemonUnreachable } from "../rpc/client.ts";
import * as v from "valibot";
import { METHODS, type Method, type Params, type ProgressEvent, type Result } from "../rpc/contract.ts";
import { describeIssues } from "../rpc/handle.ts";
import { formatSize, parseSize } from "../units.ts";
import { BUILD_ID, VERSION } from "../version.ts";
import { ensureDaemon, tryStatus, waitForExit } from "./autostart.ts";
import { completionScript } from "./completion.ts";
import * as vm from "./vm-cmds.ts";
import { printJson, processOut, progressRenderer, table, type Out } from "./render.ts";
import { lazy } from "../lazy.ts";
import type { FanMethod } from "../rpc/results.ts";
import type { ExecCliOptions } from "./exec-cmds.ts";

// What only some commands need loads when they run: `version`, `vm list` and `vm show` never
// load the daemon, ssh2, the drivers or the store (the import check in scripts/ enforces it).
const host = lazy(() => import("./host-cmds.ts"));
const ws = lazy(() => import("./workspace-cmds.ts"));
const execCmds = lazy(() => import("./exec-cmds.ts"));
const cpCmds = lazy(() => import("./cp-cmds.ts"));
const mcpServer = lazy(() => import("./mcp.ts"));

type Opts = Record<string, unknown> & { json?: boolean };

const out: Out = processOut();
const paths = () => resolvePaths();

/** One RPC to the daemon, starting it first when needed. */
export async function rpc<M extends Method>(method: M, params?: Params<M>, onEvent?: (e: ProgressEvent) => void, signal?: AbortSignal): Promise<Result<M>> {
  const clean = Object.fromEntries(Object.entries(params ?? {}).filter(([, v]) => v !== undefined));
  const checked = v.safeParse(METHODS[method], clean, { abortEarly: false });
  if (!checked.success)
    throw new BangerError("invalid_argument", describeIssues(method, checked.issues).replace(/^[^:]+: /, ""), {
      hint: "Nothing was changed. See `banger --help`.",
    });
  const p = paths();
  for (let attempt = 1; ; attempt++) {
    await ensureDaemon(p, out.err);
    try {
      return await call<Result<M>>(p.socket, method, clean, { buildId: BUILD_ID, onEvent, signal });
    } catch (err) {
      // Nothing reached the daemon (it was being replaced or restarted): safe to ask again.
      if (!(err instanceof DaemonUnreachable)) throw err;
      if (attempt >= 3) throw new BangerError("unavailable", err.message, { hint: `See \`banger daemon logs\` (${p.daemonLog}).` });
      await Bun.sleep(100 * attempt);
    }
  }
}

export async function doctor(o: Opts) {
  const p = paths();
  const { hostDoctorDeps, runDoctor } = await import("../host/doctor.ts");
  const { registeredArtifacts } = await import("../store/db.ts");
  const registered = (kernel: string, image: string) => registeredArtifacts(p.dbFile, kernel, image);
  const report = await runDoctor(hostDoctorDeps(p, hostRunner, () => tryStatus(p), registered));
  if (o.json) printJson(out, report);
  else {
    for (const c of report.checks) {
      const mark = { pass: "ok  ", warn: "warn", fail: "FAIL" }[c.status];
      out.out(`${mark}  ${c.name.padEnd(15)} ${c.detail}${c.fix ? `\n      ${"".padEnd(15)} fix: ${c.fix}` : ""}`);
    }
    out.out(`\naccel: ${report.accel}; ${report.summary.pass} ok, ${report.summary.warn} warnings, ${report.summary.fail} failures`);
  }
  return report.summary.fail > 0 ? 1 : 0;
}

export function completion(cli: CAC, shell: string) {
  if (!["bash", "zsh", "fish"].includes(shell)) throw new BangerError("invalid_argument", `unknown shell "${shell}"`, { hint: "Use bash, zsh or fish." });
  process.stdout.write(completionScript(cli, shell));
}

export function groupHelp(cli: CAC, group: string): number {
  const cmds = cli.commands.filter((c) => c.name.startsWith(`${group} `) && c.name !== "daemon run");
  out.out(`Usage: banger ${group} <command>\n\nCommands:`);
  out.out(
    table(
      ["", ""],
      cmds.map((c) => [`  ${c.rawName}`, c.description]),
    )
      .split("\n")
      .slice(1)
      .join("\n"),
  );
  out.out(`\nRun \`banger ${group} <command> --help\` for a command's options.`);
  return 0;
}

export function configShow(o: Opts) {
  const config = loadConfig(paths());
  if (o.json) return printJson(out, config);
  process.stdout.write(renderConfig(config));
}

export function configPath() {
  out.out(paths().configFile);
}

export async function daemonStatus(o: Opts) {
  const s = await ensureDaemon(paths(), out.err);
  if (o.json) return printJson(out, s);
  out.out(`running: pid ${s.pid}, version ${s.version}, build ${s.buildId}, up ${s.uptimeS}s, ${s.vms} VMs\nsocket: ${s.socket}\nlog: ${s.log}`);
  out.out(s.dnsProblem ? `dns: not listening: ${s.dnsProblem.message}\n  fix: ${DNS_FIX}` : `dns: ${s.dns}`);
}

export async function daemonStop() {
  const p = paths();
  const s = await tryStatus(p);
  if (!s) return out.out("daemon is not running");
  await call(p.socket, "daemon.stop", {}, { buildId: BUILD_ID });
  if ((await waitForExit(s.pid, 15_000)) === "not ours") {
    throw new BangerError("permission_denied", `the daemon's answer named pid ${s.pid}, which is not a banger daemon of yours; it was left alone`, {
      hint: `Check what answers on ${p.socket} (banger daemon status).`,
    });
  }
  out.out(`daemon stopped (pid ${s.pid}); VMs keep running`);
}

export async function daemonLogs(o: Opts) {
  const file = paths().daemonLog;
  if (!existsSync(file)) return out.out(`no daemon log yet (${file})`);
  await tailFile(file, Number(o.lines ?? 100), Boolean(o.follow));
}

/** Prints the last n lines of a file, then follows it when asked. */
export async function tailFile(file: string, n: number, follow: boolean) {
  process.stdout.write(printable(tailLines(file, n), { lines: true }));
  if (!follow) return;
  let pos = statSync(file).size;
  await new Promise<void>(() => {
    watch(file, () => {
      const size = statSync(file).size;
      if (size < pos) pos = 0; // rotated or truncated: start over at the new beginning
      if (size === pos) return;
      // A burst larger than the tail limit is skipped to its end rather than read whole.
      const from = Math.max(pos, size - MAX_TAIL_BYTES);
      const slice = Bun.file(file).slice(from, size);
      pos = size;
      void slice.text().then((t) => process.stdout.write(printable(t, { lines: true })));
    });
  });
}

export async function daemonRun() {
  const { runDaemon } = await import("../daemon/serve.ts");
  return runDaemon();
}

export const hostSetup = (o: Opts) => host.hostSetup(out, { systemd: Boolean(o.systemd), owner: o.owner === undefined ? undefined : String(o.owner) });
export const hostTeardown = () => host.hostTeardown(out);
export const hostStatus = (o: Opts) => host.hostStatus(out, o);

export const kernelList = (o: Opts) => listCmd("kernel.list", o);
export const kernelShow = (name: string, o: Opts) => showCmd("kernel.show", { name }, o);
export const kernelPull = (name: string, o: Opts = {}) => streamCmd("kernel.pull", { name }, o);
export const kernelImport = (path: string, o: Opts) =>
  showCmd("kernel.import", { path: resolve(path), name: str(o.name), force: o.force ? true : undefined }, o);
export const kernelBuild = (o: Opts) =>
  streamCmd("kernel.build", { name: str(o.name), source: o.source === undefined ? undefined : resolve(String(o.source)) }, o);
export const kernelDelete = (name: string) => showCmd("kernel.delete", { name }, {});
export const imageList = (o: Opts) => listCmd("image.list", o);
export const imageShow = (name: string, o: Opts) => showCmd("image.show", { name }, o);
export const imagePull = (name: string, o: Opts = {}) => streamCmd("image.pull", { name }, o);
export const imageImport = (source: string, o: Opts) =>
  streamCmd(
    "image.import",
    {
      source,
      name:
        str(o.name) ??
        basename(source)
          .replace(/(\.tar)?(\.gz)?$/, "")
          .replace(/[^A-Za-z0-9._-]/g, "-"),
      kernel: str(o.kernel),
      kernelFrom: str(o.kernelFrom),
    },
    o,
  );
export const imageBuild = (o: Opts) => streamCmd("image.build", { name: str(o.name), kernel: str(o.kernel), packages: listOpt(o.packages) }, o);
/** A comma-separated option (repeatable too) as a list, or undefined when not given. */
function listOpt(value: unknown): string[] | undefined {
  if (value === undefined || value === true) return undefined;
  return [value]
    .flat()
    .flatMap((x) => String(x).split(","))
    .map((x) => x.trim())
    .filter(Boolean);
}
export const imageDelete = (name: string) => showCmd("image.delete", { name }, {});

/** `cache list`: the goldens kept for warm start. */
export async function cacheList(o: Opts) {
  const rows = await rpc("cache.list");
  if (o.json) return printJson(out, rows);
  if (!rows.length) return out.out("no goldens kept (one is made after a cold `banger vm create`; warm_cache = 0 turns this off)");
  out.out(
    table(
      ["KEY", "IMAGE", "KERNEL", "CPUS", "MEMORY", "MIN DISK", "VMM", "ON DISK", "USED"],
      rows.map((g) => [
        g.key,
        g.image,
        g.kernel,
        String(g.cpus),
        `${g.memoryMib}M`,
        formatSize(g.diskBytes),
        `${g.vmm} ${g.saved.version}`,
        formatSize(g.bytes),
        g.usedAt,
      ]),
    ),
  );
}

/** `cache prune [--all]`: drops stale goldens and those beyond warm_cache (all of them with --all). */
export async function cachePrune(o: Opts) {
  const removed = await rpc("cache.prune", { all: o.all ? true : undefined });
  if (o.json) return printJson(out, removed);
  out.out(removed.length ? removed.map((r) => `removed ${r.key} (${r.reason})`).join("\n") : "nothing to prune");
}

export const vmCreate = (o: Opts) => vm.create(out, rpc, createParams(o), { json: Boolean(o.json) });
export const vmRun = (cmd: string[], o: Opts) => ws.run(out, rpc, cmd.map(String), o, createParams(o));
export const vmFanout = (method: FanMethod, refs: string[], extra: Record<string, unknown> = {}) =>
  vm.fan(out, rpc, method, { refs: refs.map(String), ...extra });
export const vmSet = (refs: string[], o: Opts) =>
  vm.fan(out, rpc, "vm.set", {
    refs: refs.map(String),
    cpus: num(o.cpus),
    memory: num(o.memory),
    disk: sizeOpt("disk", o.disk),
    nat: natFlag(),
    net: str(o.net),
    group: groupOpt(o.group),
  });

/** --nat / --no-nat as given (cac's negation would turn "absent" into true). */
function natFlag(): boolean | undefined {
  const args = process.argv;
  const last = args.findLastIndex((a) => a === "--nat" || a === "--no-nat");
  return last < 0 ? undefined : args[last] === "--nat";
}
export const vmFork = (ref: string, o: Opts) => vm.fork(out, rpc, ref, { name: str(o.name), count: num(o.count), json: Boolean(o.json) });
export const vmSnapshot = (verb: string, ref: string, name: string | undefined, o: Opts) =>
  vm.snapshot(out, rpc, verb, ref, name, { memory: Boolean(o.memory), json: Boolean(o.json) });
export const vmLogs = (ref: string, o: Opts) => vm.logs(out, rpc, ref, Number(o.lines ?? 200), Boolean(o.follow), tailFile);
export const vmStats = (ref: string | undefined, o: Opts) => vm.stats(out, rpc, ref, Boolean(o.json));
export const vmHealth = (ref: string, o: Opts) => vm.health(out, rpc, ref, Boolean(o.json));
export const vmPorts = (ref: string, o: Opts) => vm.ports(out, rpc, ref, Boolean(o.json));
export const vmSsh = (ref: string, cmd: string[]) => vm.ssh(out, rpc, ref, cmd);
export const sshConfig = (verb: string, args: string[] = []) => vm.sshConfig(out, rpc, verb, args);
export const workspacePrepare = (ref: string, o: Opts) =>
  ws.prepare(out, rpc, ref, { from: str(o.from), fullCopy: Boolean(o.fullCopy), replace: Boolean(o.replace) }).then(() => 0);
export const workspaceSync = (ref: string, o: Opts) => ws.syncCmd(out, rpc, ref, { from: str(o.from), replace: Boolean(o.replace) }).then(() => 0);
export const workspaceExport = (ref: string, o: Opts) =>
  ws.exportCmd(out, rpc, ref, { to: str(o.to), branch: str(o.branch), patch: str(o.patch), force: Boolean(o.force) }).then(() => 0);

function str(x: unknown): string | undefined {
  return x === undefined || x === true ? undefined : String(x);
}
/** --group NAME; `--group ""` (cac gives "" or true) means no group. */
function groupOpt(x: unknown): string | undefined {
  if (x === undefined) return undefined;
  return x === true ? "" : String(x);
}
function num(x: unknown): number | undefined {
  return x === undefined ? undefined : Number(x);
}

/** "8G" → bytes; a malformed size is a usage error naming the flag. */
export function sizeOpt(flag: string, x: unknown): number | undefined {
  if (x === undefined) return undefined;
  const n = parseSize(String(x));
  if (n === null) throw new BangerError("invalid_argument", `--${flag}: "${x}" is not a size`, { hint: "Use a size such as 8G or 512M." });
  return n;
}

function createParams(o: Opts) {
  return {
    name: str(o.name),
    image: str(o.image),
    kernel: str(o.kernel),
    cpus: num(o.cpus),
    memory: num(o.memory),
    disk: sizeOpt("disk", o.disk),
    nat: o.nat ? true : undefined,
    net: str(o.net),
    group: groupOpt(o.group),
    cold: o.cold ? true : undefined,
  };
}

async function listCmd(method: "kernel.list" | "image.list", o: Opts) {
  if (method === "kernel.list") {
    const rows = await rpc(method);
    if (o.json) return printJson(out, rows);
    if (!rows.length) return out.out("no kernels; `banger kernel import <vmlinux>`, `kernel pull` or `kernel build`");
    return out.out(
      table(
        ["NAME", "VERSION", "SIZE", "SHA256", "SOURCE"],
        rows.map((k) => [k.name, k.version, formatSize(k.size_bytes), k.sha256.slice(0, 12), k.source]),
      ),
    );
  }
  const rows = await rpc(method);
  if (o.json) return printJson(out, rows);
  if (!rows.length) return out.out("no images; `banger image build` or `banger image import`");
  out.out(
    table(
      ["NAME", "KERNEL", "SIZE", "AGENT", "SOURCE"],
      rows.map((i) => [i.name, i.kernel ?? "-", formatSize(i.size_bytes), i.agent_version, i.source]),
    ),
  );
}

/** An answer as `key value` lines. */
function keyValues(result: unknown): string {
  const entries = result !== null && typeof result === "object" ? Object.entries(result) : [["result", result]];
  return entries.map(([k, v]) => `${String(k).padEnd(14)} ${typeof v === "object" ? JSON.stringify(v) : String(v)}`).join("\n");
}

/** Prints a result as `key value` lines, or JSON with --json. */
async function showCmd(method: Method, params: Record<string, unknown>, o: Opts) {
  const result = await rpc(method, params);
  if (o.json) return printJson(out, result);
  out.out(keyValues(result));
}

/** A long artifact call with live stages; Ctrl-C cancels it (asking first on a TTY) and the daemon stops its work. */
async function streamCmd(method: Method, params: Record<string, unknown>, o: Opts) {
  const progress = progressRenderer(out, Boolean(o.json));
  const abort = new AbortController();
  const release = vm.cancelOnInterrupt(out, abort, `the ${method.replace(".", " ")}`);
  try {
    const result = await rpc(method, params, progress.onEvent, abort.signal);
    // With --json every line is one JSON object: the events, then the result.
    if (o.json) out.out(JSON.stringify(result));
    else out.out(keyValues(result));
  } finally {
    release();
    progress.stop();
  }
}

/** `vm exec`: streams through the daemon's exec socket to the guest agent. */
export async function vmExec(ref: string, cmd: string[], o: ExecCliOptions): Promise<number> {
  const p = paths();
  return execCmds.execCommand(p.execSocket, ref, cmd, o, () => ensureDaemon(p, out.err).then(() => {}));
}

/** `vm cp`: tar over the exec socket. */
export async function vmCp(args: string[], o: { recursive?: boolean }): Promise<number> {
  const p = paths();
  await cpCmds.cpCommand(p.execSocket, args, Boolean(o.recursive), () => ensureDaemon(p, out.err).then(() => {}));
  return 0;
}

/** `banger mcp`: the MCP server on stdio; the daemon starts on the first tool call. */
export function mcp(): Promise<number> {
  return mcpServer.serveMcp({
    rpc: (method, params) => rpc(method, params),
    execSocket: paths().execSocket,
    ensureDaemon: () => ensureDaemon(paths(), out.err).then(() => {}),
  });
}
