import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { BangerError } from "../errors.ts";
import { hostRunner } from "../host/runner.ts";
import { sshConnect, sshShell } from "../host/ssh.ts";
import type { Method } from "../rpc/contract.ts";
import type { VmView } from "../vm/model.ts";
import type { FanoutResult } from "../vm/refs.ts";
import { DEFAULT_GUEST_DIR, exportWorkspace, prepareWorkspace, shq } from "../vm/workspace.ts";
import type { GuestShell } from "../vm/workspace/shell.ts";
import { resolvePaths } from "../host/paths.ts";
import { agentShell, agentUsable } from "./exec-client.ts";
import { execCommand } from "./exec-cmds.ts";
import type { Out } from "./render.ts";
import { checkedSshInfo, create, systemSsh, type SshInfo } from "./vm-cmds.ts";

type Rpc = <T>(method: Method, params?: Record<string, unknown>, onEvent?: (e: never) => void, signal?: AbortSignal) => Promise<T>;

/**
 * A shell in the VM: through the guest agent where it runs exec (no handshake per call), else
 * an SSH session with banger's key accepting only the VM's own host key.
 * BANGER_GUEST_TRANSPORT=ssh forces SSH.
 */
async function connect(rpc: Rpc, ref: string): Promise<{ info: SshInfo; shell: GuestShell; end(): void }> {
  const info = await checkedSshInfo(rpc, ref);
  if (info.state !== "running") throw new BangerError("failed_precondition", `VM ${info.name} is ${info.state}`, { hint: `Start it: banger vm start ${info.name}` });
  const execSocket = resolvePaths().execSocket;
  if (await agentUsable(execSocket, info.name)) return { info, shell: agentShell(execSocket, info.name), end: () => {} };
  const conn = await sshConnect({ host: info.ip, user: info.user, privateKey: readFileSync(info.key), knownHostKey: info.host_key, timeoutMs: 15_000 });
  return { info, shell: sshShell(conn), end: () => conn.end() };
}

/** `vm workspace prepare`: the repo's working tree and history to /root/repo, streamed over SSH. */
export async function prepare(out: Out, rpc: Rpc, ref: string, o: { from?: string; fullCopy?: boolean; replace?: boolean; toStderr?: boolean }) {
  const { info, end, shell } = await connect(rpc, ref);
  try {
    const r = await prepareWorkspace({ shell, from: resolve(o.from ?? "."), fullCopy: o.fullCopy, replace: o.replace });
    const say = (line: string) => (o.toStderr ? out.err(line) : out.out(line));
    say(`${r.source} → ${info.name}:${r.guestDir} (${(r.bytes / 1024 / 1024).toFixed(1)} MiB${r.fullCopy ? ", full copy" : ""}) in ${(r.ms / 1000).toFixed(1)}s`);
    return r;
  } finally {
    end();
  }
}

/** `vm workspace export`: the guest's work back as a branch (or a patch); the host checkout is untouched. */
export async function exportCmd(out: Out, rpc: Rpc, ref: string, o: { to?: string; branch?: string; patch?: string; force?: boolean }) {
  const { info, end, shell } = await connect(rpc, ref);
  try {
    const r = await exportWorkspace({ shell, to: resolve(o.to ?? "."), vmName: info.name, branch: o.branch, patch: o.patch ? resolve(o.patch) : undefined, force: o.force });
    out.out(r.summary);
    return r;
  } finally {
    end();
  }
}

async function insideRepo(path: string): Promise<boolean> {
  const r = await hostRunner.run(["git", "-C", path, "rev-parse", "--show-toplevel"], { allowFailure: true });
  return r.code === 0;
}

/** `vm run`: create (or start) the VM, prepare the workspace, then run the command in /root/repo or print next steps. */
export async function run(out: Out, rpc: Rpc, cmd: string[], o: Record<string, unknown>, createParams: Record<string, unknown>): Promise<number> {
  const name = createParams.name as string | undefined;
  const existing = name ? (await rpc<VmView[]>("vm.list")).find((v) => v.name === name) : undefined;
  let vm: VmView;
  if (existing) {
    if (existing.state !== "running") {
      const [r] = await rpc<FanoutResult[]>("vm.start", { refs: [existing.name] });
      if (!r?.ok) throw new BangerError((r?.error?.code as never) ?? "internal", r?.message ?? "start failed", { hint: r?.error?.hint });
    }
    vm = await rpc<VmView>("vm.show", { ref: existing.name });
  } else {
    vm = await create(out, rpc, createParams, { forRun: true });
  }
  const from = resolve(String(o.from ?? "."));
  if (await insideRepo(from)) {
    try {
      await prepare(out, rpc, vm.name, { from, fullCopy: Boolean(o.fullCopy), toStderr: true });
    } catch (err) {
      if (!(err instanceof BangerError && err.code === "already_exists")) throw err;
      out.err(`${DEFAULT_GUEST_DIR} in ${vm.name} already holds a workspace; keeping it`);
    }
  } else out.err(`${from} is not a git repository; no workspace prepared`);
  if (!cmd.length) {
    out.out(`\nnext:\n  banger vm ssh ${vm.name}                   # a shell (the repo is at ${DEFAULT_GUEST_DIR})\n  banger vm workspace export ${vm.name}      # bring the work back as branch banger/${vm.name}\n  banger vm delete --force ${vm.name}        # remove the VM and everything it owns`);
    return 0;
  }
  const script = `cd ${shq(DEFAULT_GUEST_DIR)} 2>/dev/null || cd /root; ${cmd.map(shq).join(" ")}`;
  const execSocket = resolvePaths().execSocket;
  if (await agentUsable(execSocket, vm.name)) return execCommand(execSocket, vm.name, ["sh", "-c", script], { tty: Boolean(process.stdin.isTTY && process.stdout.isTTY) });
  return systemSsh(rpc, vm.name, script, true);
}
