/**
 * `vm fork`: running copies of a running VM at this moment. The source is paused for as long as
 * its device state, RAM and disks take to copy, then runs on. The copies map one frozen RAM file
 * copy-on-write (hard links of it, so it is freed with the last copy), start with their NIC link
 * down, get their own identity from the guest agent (`reidentify`), and only then go online.
 */
import { linkSync, mkdirSync, readFileSync, rmSync, statSync, truncateSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { BangerError } from "../errors.ts";
import type { CallContext } from "./model.ts";
import type { VmRow } from "../store/vms.ts";
import { allocate } from "./allocate.ts";
import { resolveArtifacts } from "./create.ts";
import type { Runtime, VmServiceDeps } from "./deps.ts";
import { sparseCopy } from "./drivers/qemu.ts";
import { liveHandle, restoreSteps, savedFiles } from "./instant.ts";
import type { Mutex } from "./locks.ts";
import { toView, type VmView } from "./model.ts";
import { bootPlan, dirOf, knownHandle, makeHostKey, stopVmm, type StartCtx } from "./start-stop.ts";
import { faultPoint, runSteps, type Step } from "./steps.ts";

/** Names for the copies: the one asked for, else <source>-f<N> not yet taken. */
export function forkNames(source: string, taken: Set<string>, count: number, name?: string): string[] {
  if (name) {
    if (count !== 1)
      throw new BangerError("invalid_argument", "--name makes one copy; leave it out with --count", { hint: `banger vm fork ${source} --count ${count}` });
    if (taken.has(name)) throw new BangerError("already_exists", `a VM named "${name}" already exists`, { hint: "Pick another --name." });
    return [name];
  }
  const out: string[] = [];
  for (let i = 1; out.length < count; i++) {
    const n = `${source.slice(0, 28)}-f${i}`;
    if (!taken.has(n)) out.push(n);
  }
  return out;
}

/** Inserts the copies' rows ("creating" until ready, so a crash midway removes them). */
function allocateCopies(deps: VmServiceDeps, source: VmRow, names: string[]): VmRow[] {
  const rows: VmRow[] = [];
  for (const name of names) {
    const existing = deps.vms.list();
    const a = allocate(deps.config.subnet, deps.network.poolTaps(), {
      ips: new Set(existing.map((v) => v.ip)),
      cids: new Set(existing.map((v) => v.cid)),
      taps: new Set(existing.map((v) => v.tap)),
    });
    const now = new Date().toISOString();
    const row: VmRow = {
      ...source,
      ...a,
      id: randomBytes(6).toString("hex"),
      name,
      state: "creating",
      desired_state: "running",
      teardown: {},
      last_error: null,
      created_at: now,
      updated_at: now,
      started_at: null,
    };
    deps.vms.insert(row);
    rows.push(row);
  }
  return rows;
}

/** Copies the source's state into each copy's directory while the source is paused. */
async function freezeInto(deps: VmServiceDeps, rt: Runtime, source: VmRow, copies: VmRow[]): Promise<void> {
  const driver = deps.drivers(source.vmm);
  const handle = liveHandle(rt, deps, source);
  const src = dirOf(deps, source.id);
  const dirs = copies.map((c) => dirOf(deps, c.id));
  for (const d of dirs) mkdirSync(d.dir, { recursive: true, mode: 0o700 });
  const first = savedFiles(dirs[0]!);
  try {
    await driver.snapshot(handle, first, src.memory);
    await faultPoint(deps, "fork freeze");
    for (const d of dirs) {
      await sparseCopy(src.overlay, d.overlay);
      await sparseCopy(src.workDisk, d.workDisk);
      await sparseCopy(src.configDrive, d.configDrive);
      if (d !== dirs[0]) {
        await sparseCopy(first.state, d.savedState);
        linkSync(first.memory, d.memory);
      }
    }
  } finally {
    if (source.state === "running") await driver.resume(handle);
  }
}

/** What the agent needs to make this copy its own machine. */
async function identityFor(deps: VmServiceDeps, vm: VmRow) {
  const dir = dirOf(deps, vm.id);
  const gw = deps.network.gateway();
  return {
    hostname: vm.name,
    ip: vm.ip,
    prefix: gw.prefix,
    gateway: gw.ip,
    mac: vm.mac,
    machineId: randomBytes(16).toString("hex"),
    hostKey: readFileSync(dir.hostKey, "utf8"),
    hostKeyPub: readFileSync(`${dir.hostKey}.pub`, "utf8").trim(),
    timeMs: Date.now(),
    entropy: randomBytes(32).toString("hex"),
  };
}

/**
 * Extends the restored copy's work-disk file to `bytes` (sparse; never shrinks) and tells the VMM,
 * which tells the guest; the agent's re-identify then grows the ext4 on it.
 */
function growDiskStep(deps: VmServiceDeps, rt: Runtime, bytes: number): Step<StartCtx> {
  return {
    name: "grow disk",
    run: async (ctx) => {
      const work = bootPlan(deps, ctx).drives.find((d) => d.id === "work")!;
      const have = statSync(work.path).size;
      if (have > bytes) throw new BangerError("internal", `the work disk of ${ctx.vm.name} is ${have} bytes, larger than the ${bytes} asked for`);
      truncateSync(work.path, bytes);
      await deps.drivers(ctx.vm.vmm).growDrive(knownHandle(rt, ctx.vm, ctx.dir)!, ctx.dir.dir, work, bytes);
    },
  };
}

/** Checks the agent's answer: every step it was asked for was done (an older agent skips growing). */
export function checkReidentified(answer: { done: string[] }, growWorkTo: number | undefined): void {
  if (growWorkTo && !answer.done.includes("grow work")) {
    throw new BangerError("internal", `the guest agent did not grow the work disk (it did: ${answer.done.join(", ")})`, {
      hint: "The image's agent predates online growth; rebuild the image, or create with --cold.",
    });
  }
}

/**
 * Restore with the link down, re-identify through the agent, link up, then the usual SSH wait and
 * ready. With `growWorkTo` (a warm start asking for a larger disk than its golden's) the work disk
 * is grown online between the agent's answer and the re-identify, which resizes the guest's ext4.
 */
export function forkSteps(deps: VmServiceDeps, rt: Runtime, opts: { growWorkTo?: number } = {}): Step<StartCtx>[] {
  const steps = restoreSteps(deps, rt, { privateMemory: true, linkDown: true });
  const at = steps.findIndex((s) => s.name === "wait agent") + 1;
  const grow = opts.growWorkTo;
  steps.splice(at, 0, ...(grow ? [growDiskStep(deps, rt, grow)] : []), {
    name: "reidentify",
    run: async (ctx) => {
      const agent = rt.agents.get(ctx.vm.id);
      if (!agent) throw new BangerError("internal", `no agent connection to ${ctx.vm.name} after the wait`);
      const identity = { ...(await identityFor(deps, ctx.vm)), ...(grow ? { growWorkTo: grow } : {}) };
      checkReidentified(await agent.reidentify(identity, { timeoutMs: 120_000 }), grow);
      await deps.drivers(ctx.vm.vmm).setLink(knownHandle(rt, ctx.vm, ctx.dir)!, true);
    },
  });
  return steps;
}

/** Brings one prepared copy up; on failure it is removed entirely. */
async function startCopy(deps: VmServiceDeps, rt: Runtime, vm: VmRow, call: CallContext): Promise<VmView> {
  const { image, kernel } = resolveArtifacts(deps, vm.image, vm.kernel);
  const dir = dirOf(deps, vm.id);
  const ctx: StartCtx = { vm, image, kernel, dir, warnings: [] };
  try {
    await makeHostKey(deps, dir, vm.name);
    await runSteps(forkSteps(deps, rt), ctx, {
      progress: (e) => call.progress({ ...e, stage: `${vm.name}: ${e.stage}` }),
      signal: call.signal,
      log: deps.log,
      failAt: deps.failAt?.(),
      pauseAt: deps.pauseAt?.(),
    });
  } catch (err) {
    await removeCopy(deps, rt, vm);
    throw err;
  }
  // The copy's device state is stale once it runs; its RAM file stays (mapped) until it stops.
  rmSync(dir.savedState, { force: true });
  return toView(deps.vms.get(vm.id)!, rt.handles.get(vm.id)?.pid ?? null, dir.dir);
}

export async function removeCopy(deps: VmServiceDeps, rt: Runtime, vm: VmRow) {
  await stopVmm(deps, rt, vm, dirOf(deps, vm.id), 0).catch(() => "");
  rmSync(dirOf(deps, vm.id).dir, { recursive: true, force: true });
  deps.vms.delete(vm.id);
}

/** Makes `count` running copies of a running (or paused) VM; the source runs on. */
export async function forkVm(
  deps: VmServiceDeps,
  rt: Runtime,
  allocLock: Mutex,
  source: VmRow,
  opts: { name?: string; count?: number },
  call: CallContext,
): Promise<{ copies: VmView[]; errors: string[]; ms: number }> {
  if (source.state !== "running" && source.state !== "paused")
    throw new BangerError("failed_precondition", `VM ${source.name} is ${source.state}; only a running VM can be forked`, {
      hint: `Start it: banger vm start ${source.name}`,
    });
  const problem = deps.drivers(source.vmm).forkProblem();
  if (problem)
    throw new BangerError("failed_precondition", `cannot fork ${source.name}: ${problem}`, {
      hint: "Take a disk snapshot instead (banger vm snapshot create).",
    });
  const t0 = performance.now();
  const copies = await allocLock.run(async () =>
    allocateCopies(deps, source, forkNames(source.name, new Set(deps.vms.list().map((v) => v.name)), opts.count ?? 1, opts.name)),
  );
  try {
    call.progress({ stage: "freeze", status: "start" });
    await freezeInto(deps, rt, source, copies);
    call.progress({ stage: "freeze", status: "done", elapsedMs: Math.round(performance.now() - t0) });
  } catch (err) {
    for (const c of copies) await removeCopy(deps, rt, c);
    throw err;
  }
  const settled = await Promise.allSettled(copies.map((c) => startCopy(deps, rt, c, call)));
  const errors = settled.flatMap((s, i) => (s.status === "rejected" ? [`${copies[i]!.name}: ${(s.reason as Error).message}`] : []));
  return { copies: settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : [])), errors, ms: Math.round(performance.now() - t0) };
}
