/**
 * The running VMM of a VM: the start steps (network, boot, wait agent, wait ssh, ready), stop,
 * the handles that find a live VMM again, and the VM directory.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { waitForAgent } from "../agent/client.ts";
import { buildConfigDrive } from "../images/config-drive.ts";
import { glueBootArgs } from "../images/glue/index.ts";
import { ed25519KeyPair } from "../host/host-key.ts";
import { vmPaths, type VmPaths } from "../host/paths.ts";
import { waitForSsh } from "../host/ssh.ts";
import type { ImageRow, KernelRow } from "../store/artifacts.ts";
import type { Teardown, VmRow } from "../store/vms.ts";
import { isSameProcess, signal } from "./drivers/process.ts";
import type { BootPlan, VmmHandle } from "./drivers/types.ts";
import { onFullDisk } from "./no-space.ts";
import { applyNet, releaseNet } from "./net-apply.ts";
import { provisionSpec } from "./provision.ts";
import type { Runtime, VmServiceDeps } from "./deps.ts";
import type { Step } from "./steps.ts";

import { AGENT_VSOCK_PORT } from "../agent/protocol.ts";

/** The agent's vsock port. */
export const AGENT_PORT = AGENT_VSOCK_PORT;

/** State carried through the start steps of one VM. */
export interface StartCtx {
  vm: VmRow;
  image: ImageRow;
  kernel: KernelRow;
  dir: VmPaths;
  handle?: VmmHandle;
  warnings: string[];
}

export function readHandles(path: string): VmmHandle | null {
  try {
    const h = JSON.parse(readFileSync(path, "utf8")) as VmmHandle;
    return typeof h.pid === "number" && typeof h.controlSocket === "string" ? h : null;
  } catch {
    return null;
  }
}

/** The handle for a VM: memory, else handles.json, else the teardown identity in the row. */
export function knownHandle(rt: Runtime, vm: VmRow, dir: VmPaths): VmmHandle | null {
  const h = rt.handles.get(vm.id) ?? readHandles(dir.handles);
  if (h) return h;
  const t = vm.teardown;
  if (!t.pid || !t.controlSocket) return null;
  return {
    vmm: vm.vmm,
    pid: t.pid,
    pidStartTime: t.pidStartTime,
    controlSocket: t.controlSocket,
    agent: { kind: "virtio-serial", path: dir.agentSocket },
    startedAt: vm.started_at ?? "",
  };
}

/** Kernel args banger adds beyond the driver's: the boot glue and the guest's static network. */
export function bootArgs(deps: VmServiceDeps, vm: VmRow): string {
  const gw = deps.network.gateway();
  return glueBootArgs({ guestIp: vm.ip, gatewayIp: gw.ip, netmask: gw.mask, hostname: vm.name });
}

export function bootPlan(deps: VmServiceDeps, ctx: StartCtx): BootPlan {
  const { vm, dir } = ctx;
  return {
    vmId: vm.id,
    dir: dir.dir,
    kernelPath: ctx.kernel.path,
    ...(ctx.kernel.initrd_path ? { initrdPath: ctx.kernel.initrd_path } : {}),
    extraBootArgs: bootArgs(deps, vm),
    drives: [
      { id: "rootfs", path: ctx.image.rootfs_path, readOnly: true },
      { id: "overlay", path: dir.overlay, readOnly: false },
      { id: "work", path: dir.workDisk, readOnly: false },
      { id: "config", path: dir.configDrive, readOnly: true },
    ],
    nic: { tap: vm.tap, mac: vm.mac },
    cpus: vm.cpus,
    memoryMib: vm.memory_mib,
    cid: vm.cid,
    consoleLog: dir.consoleLog,
    vmmLog: dir.vmmLog,
    memoryFile: dir.memory,
  };
}

/** The boot step: the config drive (keys, provisioning, a newer agent if the image's is older), then the VMM. */
async function boot(deps: VmServiceDeps, rt: Runtime, ctx: StartCtx): Promise<void> {
  const key = await deps.sshKey();
  const pushAgent =
    deps.agent.binaryPath && ctx.image.agent_version !== deps.agent.version ? { version: deps.agent.version, binaryPath: deps.agent.binaryPath } : undefined;
  const spec = await provisionSpec({
    name: ctx.vm.name,
    config: deps.config,
    home: deps.paths.home,
    runner: deps.runner,
    publicKey: key.publicKey,
    hostKeyPath: ctx.dir.hostKey,
    nameservers: deps.network.nameservers(),
    agent: pushAgent,
    warn: (m) => ctx.warnings.push(m),
  });
  await onFullDisk("config drive", ctx.dir.configDrive, deps.paths.vmsDir, () => buildConfigDrive(ctx.dir.configDrive, spec, { runner: deps.runner }));
  rmSync(ctx.dir.consoleLog, { force: true });
  await recordHandle(deps, rt, ctx, await deps.drivers(ctx.vm.vmm).start(bootPlan(deps, ctx)));
}

/** The steps that take a VM with disks from stopped to ready; shared by create and start. */
export function startSteps(deps: VmServiceDeps, rt: Runtime): Step<StartCtx>[] {
  return [
    {
      name: "network",
      run: async ({ vm }) => {
        await deps.network.checkTap(vm.tap);
        await applyNet(deps, vm);
      },
      undo: async ({ vm }) => releaseNet(deps, deps.vms.get(vm.id) ?? vm),
    },
    {
      name: "boot",
      run: (ctx) => boot(deps, rt, ctx),
      undo: async (ctx) => void (await stopVmm(deps, rt, ctx.vm, ctx.dir, 0)),
    },
    {
      name: "wait agent",
      run: async (ctx) => {
        const handle = ctx.handle!;
        const driver = deps.drivers(ctx.vm.vmm);
        const ready = await waitForAgent(() => driver.connectAgent(handle, AGENT_PORT), {
          timeoutMs: deps.readiness.agentTimeoutMs,
          intervalMs: 200,
          logPath: ctx.dir.consoleLog,
        });
        rt.agents.set(ctx.vm.id, ready.client);
      },
      undo: async (ctx) => closeAgent(rt, ctx.vm.id),
    },
    {
      name: "wait ssh",
      run: async (ctx) => {
        if (deps.readiness.skipSsh) return;
        const key = await deps.sshKey();
        await waitForSsh({
          host: ctx.vm.ip,
          user: "root",
          privateKey: readFileSync(key.path, "utf8"),
          knownHostKey: readFileSync(`${ctx.dir.hostKey}.pub`, "utf8").trim(),
          timeoutMs: deps.readiness.sshTimeoutMs,
        });
      },
    },
    {
      name: "ready",
      run: async (ctx) => {
        deps.dns.set(ctx.vm.name, ctx.vm.ip);
        deps.vms.update(ctx.vm.id, { state: "running", desired_state: "running", last_error: null });
      },
      undo: async (ctx) => deps.dns.delete(ctx.vm.name),
    },
  ];
}

/** Remembers a freshly started VMM in memory, handles.json and the row (for teardown after a crash). */
export async function recordHandle(deps: VmServiceDeps, rt: Runtime, ctx: StartCtx, handle: VmmHandle) {
  ctx.handle = handle;
  rt.handles.set(ctx.vm.id, handle);
  await writeFile(ctx.dir.handles, JSON.stringify(handle, null, 2));
  const row = deps.vms.get(ctx.vm.id)!;
  const teardown: Teardown = { ...row.teardown, pid: handle.pid, pidStartTime: handle.pidStartTime, controlSocket: handle.controlSocket };
  // A create stays "creating" until ready, so a daemon crash before then is undone, never kept half-made.
  deps.vms.update(ctx.vm.id, { teardown, started_at: handle.startedAt, state: row.state === "creating" ? "creating" : "starting" });
}

export function closeAgent(rt: Runtime, id: string) {
  rt.agents.get(id)?.close();
  rt.agents.delete(id);
}

/**
 * Ends the VMM (gracefully within graceMs when > 0, else killed) and releases everything
 * that exists only while running: sockets, NAT, DNS, handles. Works from handles.json or,
 * when that is gone or corrupt, from the teardown identity in the row. Never hangs.
 */
export async function stopVmm(deps: VmServiceDeps, rt: Runtime, given: VmRow, dir: VmPaths, graceMs: number): Promise<string> {
  const vm = deps.vms.get(given.id) ?? given;
  closeAgent(rt, vm.id);
  const handle = knownHandle(rt, vm, dir);
  const driver = deps.drivers(vm.vmm);
  let how = "was not running";
  if (handle && isSameProcess(handle.pid, handle.pidStartTime)) {
    try {
      how = graceMs > 0 ? await driver.stop(handle, graceMs) : (await driver.kill(handle), "killed");
    } catch (err) {
      deps.log(`stop ${vm.name}: ${(err as Error).message}; killing pid ${handle.pid}`);
      signal(handle.pid, "SIGKILL");
      how = "killed";
    }
  }
  await releaseRunning(deps, rt, vm, dir, handle);
  // A stopped guest's RAM is garbage; the next boot starts from an empty file.
  rmSync(dir.memory, { force: true });
  if (deps.vms.get(vm.id)) deps.vms.update(vm.id, { teardown: {}, state: "stopped" });
  return how;
}

/** Releases what exists only while a VMM runs (sockets, NAT, DNS, handles); the VMM is already gone. */
export async function releaseRunning(deps: VmServiceDeps, rt: Runtime, vm: VmRow, dir: VmPaths, handle: VmmHandle | null) {
  await deps
    .drivers(vm.vmm)
    .cleanup(handle, dir.dir)
    .catch((err) => deps.log(`cleanup ${vm.name}: ${(err as Error).message}`));
  await releaseNet(deps, deps.vms.get(vm.id) ?? vm).catch((err) => deps.log(`network rules of ${vm.name}: ${(err as Error).message}`));
  deps.dns.delete(vm.name);
  rt.handles.delete(vm.id);
  rmSync(dir.handles, { force: true });
}

/** Paths of one VM. */
export function dirOf(deps: VmServiceDeps, id: string): VmPaths {
  return vmPaths(deps.paths, id);
}

/**
 * Makes the VM's sshd host key (banger knows it before the first boot, so known_hosts is never
 * guessed): an ed25519 pair in OpenSSH's formats, made in process rather than by ssh-keygen.
 */
export async function makeHostKey(_deps: VmServiceDeps, dir: VmPaths, name: string) {
  if (existsSync(dir.hostKey)) return;
  const key = ed25519KeyPair(`${name}.vm`);
  // Async, so the files are created off the daemon's JS thread (see put in config-drive.ts).
  await writeFile(dir.hostKey, key.privateKey, { mode: 0o600, flag: "wx" });
  await writeFile(`${dir.hostKey}.pub`, key.publicKey, { mode: 0o644 });
}
