import { existsSync } from "node:fs";
import { BangerError } from "../errors.ts";
import { printable } from "../printable.ts";
import { installInclude, uninstallInclude, writeSshConfig, sshConfigText } from "../host/ssh-config.ts";
import { resolvePaths } from "../host/paths.ts";
import { loadConfig } from "../config.ts";
import type { Rpc } from "../rpc/contract.ts";
import type { FanMethod } from "../rpc/results.ts";
import type { FanoutResult } from "../vm/refs.ts";
import type { VmView } from "../vm/model.ts";
import type { VmStats } from "../vm/reconcile.ts";
import { renderPortsTable, type PortsView } from "../vm/ports-view.ts";
import { selfArgv } from "../self.ts";
import { checkSshInfo, systemSshArgv, type SshInfo } from "./ssh-info.ts";
import { shq } from "../workspace/shell.ts";
import { printJson, progressRenderer, table, type Out } from "./render.ts";
import { formatSize } from "../units.ts";
import { renderFanout, renderStats } from "./vm-render.ts";

export type { SshInfo } from "./ssh-info.ts";

/** The daemon's ssh details for a VM, checked before any of it is used (see checkSshInfo). */
export async function checkedSshInfo(rpc: Rpc, ref: string): Promise<SshInfo> {
  const info = await rpc("vm.ssh-info", { ref });
  return checkSshInfo(info, loadConfig(resolvePaths()).subnet);
}

/** Asks on a TTY whether Ctrl-C should cancel; piped, Ctrl-C cancels at once. */
export function cancelOnInterrupt(out: Out, abort: AbortController, what: string): () => void {
  let asking = false;
  const onSigint = () => {
    if (!out.isTTY || !process.stdin.isTTY) return abort.abort();
    if (asking) return abort.abort();
    asking = true;
    // Loaded here: node:readline costs every command's start-up, and only this prompt needs it.
    const { createInterface } = require("node:readline") as typeof import("node:readline");
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    rl.question(`\nCancel ${what}? Everything it made so far is removed. [y/N] `, (a) => {
      rl.close();
      asking = false;
      if (/^y/i.test(a.trim())) abort.abort();
    });
  };
  process.on("SIGINT", onSigint);
  return () => process.off("SIGINT", onSigint);
}

/**
 * `vm create`: live stages, Ctrl-C asks to cancel (a cancelled create leaves nothing).
 * `forRun`: one status line on stderr instead of the next steps, so `vm run`'s stdout is the command's.
 */
export async function create(out: Out, rpc: Rpc, params: Record<string, unknown>, { json = false, forRun = false } = {}): Promise<VmView> {
  const progress = progressRenderer(out, json);
  const abort = new AbortController();
  const release = cancelOnInterrupt(out, abort, "the create");
  try {
    const vm = await rpc("vm.create", params, progress.onEvent, abort.signal);
    // With --json every line is one JSON object: the events, then the VM.
    if (json) out.out(JSON.stringify(vm));
    else if (forRun) out.err(`${vm.name} is ready: ${vm.ip} (${vm.dns})`);
    else out.out(`${vm.name} is ready: ${vm.ip} (${vm.dns})\n  banger vm ssh ${vm.name}\n  banger vm stop ${vm.name}`);
    return vm;
  } finally {
    progress.stop();
    release();
  }
}

export async function fan(out: Out, rpc: Rpc, method: FanMethod, params: { refs: string[] } & Record<string, unknown>): Promise<number> {
  const progress = progressRenderer(out, false);
  try {
    return renderFanout(out, await rpc(method, params, progress.onEvent));
  } finally {
    progress.stop();
  }
}

export async function stats(out: Out, rpc: Rpc, ref: string | undefined, json: boolean) {
  const s = await rpc("vm.stats", ref ? { ref } : {});
  json ? printJson(out, s) : renderStats(out, s);
}

export async function health(out: Out, rpc: Rpc, ref: string, json: boolean) {
  const h = await rpc("vm.health", { ref });
  const show = (x: string) => printable(x).slice(0, 256);
  json ? printJson(out, h) : out.out(`${show(h.name)}: agent ${show(h.version)} healthy, guest up ${Math.round(h.uptime_s)}s, boot id ${show(h.boot_id)}`);
}

export async function ports(out: Out, rpc: Rpc, ref: string, json: boolean) {
  const view = await rpc("vm.ports", { ref });
  json ? printJson(out, view) : out.out(renderPortsTable(view));
}

/** Runs the system ssh into a VM with banger's key and known_hosts (host keys checked); resolves its exit code. */
export async function systemSsh(rpc: Rpc, ref: string, remote: string | null, tty: boolean): Promise<number> {
  const info = await checkedSshInfo(rpc, ref);
  if (info.state !== "running")
    throw new BangerError("failed_precondition", `VM ${info.name} is ${info.state}`, { hint: `Start it: banger vm start ${info.name}` });
  const argv = systemSshArgv(info, resolvePaths().knownHosts, remote, tty && Boolean(process.stdin.isTTY));
  return new Promise<number>((resolve) => {
    const { spawn } = require("node:child_process") as typeof import("node:child_process");
    const child = spawn("ssh", argv, { stdio: "inherit" });
    child.on("exit", (c, sig) => resolve(c ?? (sig ? 128 : 1)));
    child.on("error", () => resolve(255));
  });
}

/** `vm ssh`: a shell, or a command whose exit code becomes ours. */
export async function ssh(out: Out, rpc: Rpc, ref: string, cmd: string[]): Promise<number> {
  const interactive = cmd.length === 0;
  const code = await systemSsh(rpc, ref, interactive ? null : cmd.map(shq).join(" "), interactive);
  if (interactive) {
    const now = await rpc("vm.show", { ref }).catch(() => null);
    if (now?.state === "running")
      out.err(`${now.name} is still running; stop it with \`banger vm stop ${now.name}\` or delete it with \`banger vm delete --force ${now.name}\``);
  }
  return code;
}

/** `ssh-config install|uninstall|show|proxy`. */
export async function sshConfig(out: Out, rpc: Rpc, verb: string, args: string[]): Promise<number | void> {
  const paths = resolvePaths();
  const config = loadConfig(paths);
  const key = config.ssh_key || paths.sshKey;
  if (verb === "show") return out.out(sshConfigText(paths, key, selfArgv()).trimEnd());
  if (verb === "install") {
    writeSshConfig(paths, key, selfArgv());
    out.out(`${installInclude(paths)}: ~/.ssh/config includes ${paths.sshConfigFile}; now \`ssh <name>.vm\` works`);
    return;
  }
  if (verb === "uninstall") return out.out(`${uninstallInclude(paths)}: banger's block in ~/.ssh/config`);
  if (verb === "proxy") return proxy(rpc, args[0] ?? "", Number(args[1] ?? 22));
  throw new BangerError("invalid_argument", `unknown ssh-config action ${verb}`);
}

/** ProxyCommand helper: finds `<name>.vm` through the daemon and pipes stdin/stdout to its port. */
async function proxy(rpc: Rpc, host: string, port: number): Promise<number> {
  const info = await checkedSshInfo(rpc, host.replace(/\.vm\.?$/, ""));
  return new Promise((resolve) => {
    const { connect } = require("node:net") as typeof import("node:net");
    const sock = connect(port, info.ip);
    process.stdin.pipe(sock);
    sock.pipe(process.stdout);
    sock.on("close", () => resolve(0));
    sock.on("error", () => resolve(1));
  });
}

/** `vm logs`: console and VMM log; -f follows the console. */
export async function logs(
  out: Out,
  rpc: Rpc,
  ref: string,
  lines: number,
  follow: boolean,
  tailFile: (f: string, n: number, follow: boolean) => Promise<void>,
) {
  const l = await rpc("vm.logs", { ref, lines });
  if (follow && existsSync(l.console_log)) return tailFile(l.console_log, lines, true);
  out.out(`==> ${l.console_log} <==\n${printable(l.console, { lines: true })}`);
  if (l.vmm) out.out(`==> ${l.vmm_log} <==\n${printable(l.vmm, { lines: true })}`);
}

/** `vm snapshot create|list|restore|delete <ref> [NAME]`. */
export async function snapshot(
  out: Out,
  rpc: Rpc,
  verb: string,
  ref: string,
  name: string | undefined,
  o: { memory?: boolean; json?: boolean },
): Promise<number> {
  if (verb === "list") {
    const list = await rpc("vm.snapshot.list", { ref });
    if (o.json) printJson(out, list);
    else
      out.out(
        list.length
          ? table(
              ["NAME", "MEMORY", "SIZE", "CREATED"],
              list.map((s) => [s.name, s.memory ? "yes" : "no", formatSize(s.size_bytes), s.created_at]),
            )
          : `no snapshots of ${ref}`,
      );
    return 0;
  }
  if (verb !== "create" && !name)
    throw new BangerError("invalid_argument", `vm snapshot ${verb} needs the snapshot's name`, { hint: `banger vm snapshot list ${ref}` });
  const progress = progressRenderer(out, false);
  try {
    const params = verb === "create" ? { ref, name, memory: o.memory ? true : undefined } : { ref, name };
    const r = await rpc(`vm.snapshot.${verb}` as "vm.snapshot.create" | "vm.snapshot.restore" | "vm.snapshot.delete", params, progress.onEvent);
    o.json ? printJson(out, r) : out.out(`${r.name}: ${r.message}`);
    return 0;
  } finally {
    progress.stop();
  }
}

/** `vm fork <ref> [--name N | --count K]`: one line per copy; exit 1 when any copy failed. */
export async function fork(out: Out, rpc: Rpc, ref: string, o: { name?: string; count?: number; json?: boolean }): Promise<number> {
  const progress = progressRenderer(out, Boolean(o.json));
  try {
    const r = await rpc("vm.fork", { ref, name: o.name, count: o.count }, progress.onEvent);
    if (o.json) printJson(out, r);
    else {
      for (const c of r.copies) out.out(`${c.name} is ready: ${c.ip} (${c.dns})`);
      for (const e of r.errors) out.err(`banger: ${e}`);
      out.out(`${r.copies.length} cop${r.copies.length === 1 ? "y" : "ies"} of ${ref} in ${r.ms} ms`);
    }
    return r.errors.length ? 1 : 0;
  } finally {
    progress.stop();
  }
}
