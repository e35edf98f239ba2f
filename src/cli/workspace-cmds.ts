import { readFileSync, realpathSync } from "node:fs";
import { isAbsolute, posix, relative, resolve, sep } from "node:path";
import { BangerError } from "../errors.ts";
import { hostRunner } from "../host/runner.ts";
import { sshConnect } from "../host/ssh.ts";
import { sshShell } from "../workspace/ssh-shell.ts";
import type { Method, Rpc } from "../rpc/contract.ts";
import type { VmView } from "../vm/model.ts";
import type { FanoutResult } from "../vm/refs.ts";
import { DEFAULT_GUEST_DIR, exportWorkspace, prepareWorkspace, shq, syncWorkspace } from "../workspace/index.ts";
import type { GuestShell } from "../workspace/shell.ts";
import { resolvePaths } from "../host/paths.ts";
import { agentShell, agentUsable } from "./exec-client.ts";
import { execCommand } from "./exec-cmds.ts";
import type { Out } from "./render.ts";
import { checkedSshInfo, create, systemSsh, type SshInfo } from "./vm-cmds.ts";

/**
 * A shell in the VM: through the guest agent where it runs exec (no handshake per call; bulk
 * input such as a prepare's archive goes over the exec's bulk channel), else an SSH session
 * with banger's key accepting only the VM's own host key. BANGER_GUEST_TRANSPORT=ssh|agent
 * overrides (see agentUsable).
 */
async function connect(rpc: Rpc, ref: string): Promise<{ info: SshInfo; shell: GuestShell; end(): void }> {
  const info = await checkedSshInfo(rpc, ref);
  if (info.state !== "running")
    throw new BangerError("failed_precondition", `VM ${info.name} is ${info.state}`, { hint: `Start it: banger vm start ${info.name}` });
  const execSocket = resolvePaths().execSocket;
  if (await agentUsable(execSocket, info.name, process.env)) return { info, shell: agentShell(execSocket, info.name), end: () => {} };
  const conn = await sshConnect({ host: info.ip, user: info.user, privateKey: readFileSync(info.key), knownHostKey: info.host_key, timeoutMs: 15_000 });
  return { info, shell: sshShell(conn), end: () => conn.end() };
}

/** `vm workspace prepare`: the repo's working tree and history to /root/repo, streamed through the agent (or SSH). */
export async function prepare(out: Out, rpc: Rpc, ref: string, o: { from?: string; fullCopy?: boolean; replace?: boolean; toStderr?: boolean }) {
  const { info, end, shell } = await connect(rpc, ref);
  try {
    const r = await prepareWorkspace({ shell, from: resolve(o.from ?? "."), fullCopy: o.fullCopy, replace: o.replace });
    const say = (line: string) => (o.toStderr ? out.err(line) : out.out(line));
    say(
      `${r.source} → ${info.name}:${r.guestDir} ` +
        `(${(r.bytes / 1024 / 1024).toFixed(1)} MiB${r.fullCopy ? ", full copy" : ""}) in ${(r.ms / 1000).toFixed(1)}s`,
    );
    return r;
  } finally {
    end();
  }
}

/** `vm workspace export`: the guest's work back as a branch (or a patch); the host checkout is untouched. */
export async function exportCmd(out: Out, rpc: Rpc, ref: string, o: { to?: string; branch?: string; patch?: string; force?: boolean }) {
  const { info, end, shell } = await connect(rpc, ref);
  try {
    const r = await exportWorkspace({
      shell,
      to: resolve(o.to ?? "."),
      vmName: info.name,
      branch: o.branch,
      patch: o.patch ? resolve(o.patch) : undefined,
      force: o.force,
    });
    out.out(r.summary);
    return r;
  } finally {
    end();
  }
}

/** `vm workspace sync`: bring the host's current working tree into /root/repo (only what changed). */
export async function syncCmd(
  out: Out,
  rpc: Rpc,
  ref: string,
  o: { from?: string; replace?: boolean; keep?: boolean; fullCopy?: boolean; toStderr?: boolean },
) {
  const { info, end, shell } = await connect(rpc, ref);
  const say = (line: string) => (o.toStderr ? out.err(line) : out.out(line));
  try {
    const mode = o.replace ? "replace" : o.keep ? "keep" : "sync";
    const r = await syncWorkspace({ shell, from: resolve(o.from ?? "."), fullCopy: o.fullCopy, mode, vmName: info.name, onNote: (l) => out.err(l) });
    say(`${r.source} → ${info.name}:${r.guestDir}: ${r.action}${r.bytes ? ` (${formatBytes(r.bytes)})` : ""} in ${(r.ms / 1000).toFixed(1)}s`);
    return r;
  } finally {
    end();
  }
}

function formatBytes(n: number): string {
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** The host directory the workspace mirrors: the repository's top, or the directory itself. */
async function workspaceTop(path: string): Promise<string> {
  const r = await hostRunner.run(["git", "-C", path, "rev-parse", "--show-toplevel"], { allowFailure: true, env: { GIT_OPTIONAL_LOCKS: "0" } });
  return realpathSync(r.code === 0 ? r.stdout.trim() : path);
}

/**
 * Where the command runs in the guest: --cwd (absolute, or relative to the workspace), else the
 * directory of the workspace that matches the host's current directory, else the workspace itself.
 */
export function guestCwd(guestDir: string, top: string | null, hostCwd: string, cwdOpt?: string): string {
  if (cwdOpt) return posix.isAbsolute(cwdOpt) ? posix.normalize(cwdOpt) : posix.join(guestDir, cwdOpt);
  if (top === null) return guestDir;
  const rel = relative(top, hostCwd);
  if (rel === "" || rel.startsWith("..") || isAbsolute(rel)) return guestDir;
  return posix.join(guestDir, ...rel.split(sep));
}

/** `vm run`: create (or start) the VM, bring the workspace up to date, then run the command there or print next steps. */
export async function run(out: Out, rpc: Rpc, cmd: string[], o: Record<string, unknown>, createParams: Record<string, unknown>): Promise<number> {
  const vm = await createOrStart(out, rpc, createParams);
  const from = resolve(String(o.from ?? "."));
  const skip = o.workspace === false;
  if (skip && o.from !== undefined) throw new BangerError("invalid_argument", "--from and --no-workspace contradict each other", { hint: "Drop one of them." });
  if (o.replace && o.keep)
    throw new BangerError("invalid_argument", "--replace and --keep contradict each other", {
      hint: "--replace discards the guest's work; --keep runs on it. Pick one.",
    });
  const top = skip ? null : await workspaceTop(from);
  if (!skip) await syncCmd(out, rpc, vm.name, { from, replace: Boolean(o.replace), keep: Boolean(o.keep), fullCopy: Boolean(o.fullCopy), toStderr: true });
  if (!cmd.length) {
    out.out(
      `\nnext:\n  banger vm ssh ${vm.name}                   # a shell (the repo is at ${DEFAULT_GUEST_DIR})\n` +
        `  banger vm workspace export ${vm.name}      # bring the work back as branch banger/${vm.name}\n` +
        `  banger vm delete --force ${vm.name}        # remove the VM and everything it owns`,
    );
    return 0;
  }
  const cwdOpt = typeof o.cwd === "string" ? o.cwd : undefined;
  const dir = guestCwd(skip ? "/root" : DEFAULT_GUEST_DIR, top, realpathSync(process.cwd()), cwdOpt);
  const fallback = skip ? "/root" : DEFAULT_GUEST_DIR;
  const missing = `banger: ${dir.replaceAll('"', "")} does not exist in the guest; running in ${fallback}`;
  const cd = `cd ${shq(dir)} 2>/dev/null || { echo "${missing}" >&2; cd ${fallback}; }`;
  const script = `${cd}; ${cmd.map(shq).join(" ")}`;
  const execSocket = resolvePaths().execSocket;
  if (await agentUsable(execSocket, vm.name))
    return execCommand(execSocket, vm.name, ["sh", "-c", script], { tty: Boolean(process.stdin.isTTY && process.stdout.isTTY) });
  return systemSsh(rpc, vm.name, script, true);
}

async function createOrStart(out: Out, rpc: Rpc, createParams: Record<string, unknown>): Promise<VmView> {
  const name = createParams.name as string | undefined;
  const existing = name ? (await rpc("vm.list")).find((v) => v.name === name) : undefined;
  if (!existing) return create(out, rpc, createParams, { forRun: true });
  if (existing.state !== "running") {
    const [r] = await rpc("vm.start", { refs: [existing.name] });
    if (!r?.ok) throw new BangerError(r?.error?.code ?? "internal", r?.message ?? "start failed", { hint: r?.error?.hint });
  }
  return rpc("vm.show", { ref: existing.name });
}
