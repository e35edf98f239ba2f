/**
 * Pause, resume and suspend: a paused VM keeps its VMM and RAM with the vCPUs frozen; a suspended
 * VM has its device state (and RAM file) in its directory and no VMM at all, and resumes with
 * every process as it was. The VMM-specific parts are behind the driver.
 */
import { existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { sparseCopy } from "./drivers/qemu.ts";
import { BangerError } from "../errors.ts";
import { waitForSshBanner } from "../host/ssh.ts";
import type { VmPaths } from "../host/paths.ts";
import type { CallContext } from "./model.ts";
import type { VmRow } from "../store/vms.ts";
import type { RestoreOptions, SavedStateFiles, SavedStateMeta, VmmHandle } from "./drivers/types.ts";
import type { Runtime, VmServiceDeps } from "./deps.ts";
import { resolveArtifacts } from "./create.ts";
import { bootPlan, closeAgent, dirOf, knownHandle, recordHandle, releaseRunning, startSteps, stopVmm, type StartCtx } from "./start-stop.ts";
import { faultPoint, runSteps, type Step } from "./steps.ts";
import { isSameProcess } from "./drivers/process.ts";

/** The saved-state files of a VM directory. */
export function savedFiles(dir: VmPaths): SavedStateFiles {
  return { state: dir.savedState, memory: dir.memory };
}

/** The metadata of a complete saved state, or null when there is none (or it is unfinished). */
export function readSavedMeta(dir: VmPaths): SavedStateMeta | null {
  try {
    const meta = JSON.parse(readFileSync(dir.savedMeta, "utf8")) as SavedStateMeta;
    return existsSync(dir.savedState) && existsSync(dir.memory) ? meta : null;
  } catch {
    return null;
  }
}

/** Drops a saved state (after a restore, a discard or a cold start). */
export function discardSavedState(dir: VmPaths) {
  for (const f of [dir.savedMeta, dir.savedState, dir.memory]) rmSync(f, { force: true });
}

export function liveHandle(rt: Runtime, deps: VmServiceDeps, vm: VmRow) {
  const h = knownHandle(rt, vm, dirOf(deps, vm.id));
  if (!h || !isSameProcess(h.pid, h.pidStartTime)) {
    throw new BangerError("failed_precondition", `VM ${vm.name} has no running VMM`, { hint: `Start it: banger vm start ${vm.name}` });
  }
  return h;
}

/** Freezes a running VM's vCPUs. */
export async function pauseVm(deps: VmServiceDeps, rt: Runtime, vm: VmRow): Promise<string> {
  if (vm.state === "paused") return "already paused";
  if (vm.state !== "running") throw new BangerError("failed_precondition", `VM ${vm.name} is ${vm.state}; only a running VM can be paused`);
  await deps.drivers(vm.vmm).pause(liveHandle(rt, deps, vm));
  deps.vms.update(vm.id, { state: "paused" });
  return "paused";
}

/** Lets a paused VM run on (a suspended one is restored by resumeVm). */
async function unpause(deps: VmServiceDeps, rt: Runtime, vm: VmRow): Promise<string> {
  await deps.drivers(vm.vmm).resume(liveHandle(rt, deps, vm));
  deps.vms.update(vm.id, { state: "running" });
  return "resumed";
}

/** Saves the VM's state to its directory and ends the VMM; nothing of it runs afterwards. */
export async function suspendVm(deps: VmServiceDeps, rt: Runtime, vm: VmRow): Promise<string> {
  if (vm.state === "suspended") return "already suspended";
  if (vm.state !== "running" && vm.state !== "paused")
    throw new BangerError("failed_precondition", `VM ${vm.name} is ${vm.state}; only a running or paused VM can be suspended`);
  const dir = dirOf(deps, vm.id);
  const handle = liveHandle(rt, deps, vm);
  const t0 = performance.now();
  rmSync(dir.savedMeta, { force: true });
  deps.vms.update(vm.id, { state: "suspending" });
  closeAgent(rt, vm.id);
  const driver = deps.drivers(vm.vmm);
  try {
    await faultPoint(deps, "suspend save");
    // The VMM is kept (paused) until the state is recorded complete, so a crash at any point
    // leaves either a VMM to run on or a complete state to resume, never neither.
    const meta = await driver.snapshot(handle, savedFiles(dir), dir.memory);
    await faultPoint(deps, "suspend record");
    // The metadata is written last: a state without it is unfinished and never restored.
    writeFileSync(dir.savedMeta, JSON.stringify(meta, null, 2));
    await faultPoint(deps, "suspend end");
    await driver.kill(handle);
  } catch (err) {
    // The VMM may still run (paused by the save): let it go on as it was.
    for (const f of [dir.savedState, dir.savedMeta]) rmSync(f, { force: true });
    if (isSameProcess(handle.pid, handle.pidStartTime)) {
      await driver.resume(handle).catch(() => {});
      deps.vms.update(vm.id, { state: "running", last_error: `suspend failed: ${(err as Error).message}` });
    } else {
      await stopVmm(deps, rt, vm, dir, 0);
    }
    throw err;
  }
  await faultPoint(deps, "suspend release");
  await releaseRunning(deps, rt, vm, dir, handle);
  deps.vms.update(vm.id, { state: "suspended", teardown: {}, last_error: null });
  return `suspended (state ${Math.ceil(statSync(dir.savedState).size / 1024)} KiB, ${Math.round(performance.now() - t0)} ms)`;
}

/** Resumes a paused VM, or restores a suspended one (cold boot instead only when asked). */
/** Null when the saved state cannot be restored and `cold` asked for a cold boot instead. */
export async function resumeVm(deps: VmServiceDeps, rt: Runtime, vm: VmRow, call: CallContext, opts: { cold?: boolean } = {}): Promise<string | null> {
  if (vm.state === "paused") return unpause(deps, rt, vm);
  if (vm.state === "running") return "already running";
  if (vm.state !== "suspended")
    throw new BangerError("failed_precondition", `VM ${vm.name} is ${vm.state}; only a paused or suspended VM can be resumed`, {
      hint: `Start it: banger vm start ${vm.name}`,
    });
  return restoreVm(deps, rt, vm, call, opts);
}

/** Restores a suspended VM from its saved state; refuses a state this host's VMM cannot load. */
export async function restoreVm(deps: VmServiceDeps, rt: Runtime, vm: VmRow, call: CallContext, opts: { cold?: boolean } = {}): Promise<string | null> {
  const dir = dirOf(deps, vm.id);
  const meta = readSavedMeta(dir);
  if (!meta)
    throw new BangerError("failed_precondition", `VM ${vm.name} has no complete saved state`, { hint: `Start it cold: banger vm start --cold ${vm.name}` });
  const problem = await deps.drivers(vm.vmm).restoreProblem(meta);
  if (problem) {
    if (opts.cold) return null;
    throw new BangerError("failed_precondition", `cannot resume ${vm.name}: ${problem}`, {
      hint: `Boot it cold instead, discarding the saved memory (running processes are lost, disks are kept): banger vm start --cold ${vm.name}`,
    });
  }
  const { image, kernel } = resolveArtifacts(deps, vm.image, vm.kernel);
  const ctx: StartCtx = { vm, image, kernel, dir, warnings: [] };
  const t0 = performance.now();
  await ownRamFile(dir);
  try {
    await runSteps(restoreSteps(deps, rt), ctx, { progress: call.progress, signal: call.signal, log: deps.log });
  } catch (err) {
    deps.vms.update(vm.id, { state: "suspended", last_error: (err as Error).message });
    throw err;
  }
  // The RAM file is live again; the device state is stale from here on.
  rmSync(dir.savedMeta, { force: true });
  rmSync(dir.savedState, { force: true });
  return `resumed from saved state (${Math.round(performance.now() - t0)} ms)`;
}

/**
 * A fork's RAM file is a hard link to the frozen copy its siblings map privately; before a restore
 * maps it shared (and writes to it), this VM gets a file of its own.
 */
async function ownRamFile(dir: VmPaths) {
  if (!existsSync(dir.memory) || statSync(dir.memory).nlink < 2) return;
  const tmp = `${dir.memory}.own`;
  await sparseCopy(dir.memory, tmp);
  renameSync(tmp, dir.memory);
}

/** The start steps with the boot replaced by a restore of the saved state. */
export function restoreSteps(deps: VmServiceDeps, rt: Runtime, opts: RestoreOptions = {}): Step<StartCtx>[] {
  return startSteps(deps, rt).map((s) =>
    s.name === "wait ssh"
      ? { name: s.name, run: async (ctx: StartCtx) => void (deps.readiness.skipSsh || (await waitForSshBanner(ctx.vm.ip, deps.readiness.sshTimeoutMs))) }
      : s.name !== "boot"
        ? s
        : {
            name: "restore",
            run: async (ctx: StartCtx) => {
              // A fork copy or warm create stays "creating" until ready: a crash before then removes it.
              if (deps.vms.get(ctx.vm.id)?.state !== "creating") deps.vms.update(ctx.vm.id, { state: "starting" });
              await recordHandle(deps, rt, ctx, await deps.drivers(ctx.vm.vmm).restore(bootPlan(deps, ctx), savedFiles(ctx.dir), opts));
            },
            undo: async (ctx: StartCtx) => {
              const row = deps.vms.get(ctx.vm.id) ?? ctx.vm;
              const handle = knownHandle(rt, row, ctx.dir);
              if (handle && isSameProcess(handle.pid, handle.pidStartTime))
                await deps
                  .drivers(row.vmm)
                  .kill(handle)
                  .catch(() => {});
              await releaseRunning(deps, rt, row, ctx.dir, handle);
              deps.vms.update(ctx.vm.id, { teardown: {} });
            },
          },
  );
}

/**
 * Reconcile for VMs caught suspending or suspended by a daemon restart. A finished save
 * (metadata written) stays suspended; an unfinished one is undone: the VM runs on if its VMM
 * lives, else it is stopped with its partial files removed. Null when the row is not such a VM.
 */
export async function reconcileSaved(deps: VmServiceDeps, rt: Runtime, row: VmRow, handle: VmmHandle | null): Promise<"kept" | "stopped" | null> {
  if (row.state !== "suspended" && row.state !== "suspending") return null;
  const dir = dirOf(deps, row.id);
  const complete = readSavedMeta(dir) !== null;
  if (complete || !handle) {
    if (handle)
      await deps
        .drivers(row.vmm)
        .kill(handle)
        .catch(() => {});
    await releaseRunning(deps, rt, row, dir, handle);
    if (complete) {
      deps.vms.update(row.id, { state: "suspended", teardown: {} });
      return "kept";
    }
    discardSavedState(dir);
    deps.vms.update(row.id, { state: "stopped", teardown: {}, last_error: "the daemon stopped during a suspend; the VM was stopped" });
    return "stopped";
  }
  rmSync(dir.savedState, { force: true });
  await deps
    .drivers(row.vmm)
    .resume(handle)
    .catch(() => {});
  deps.vms.update(row.id, { state: "running", last_error: "the daemon stopped during a suspend; the VM runs on" });
  return null;
}
