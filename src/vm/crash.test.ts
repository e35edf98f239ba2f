/**
 * A daemon killed in the middle of suspend, fork and warm start, in process: the operation is held
 * at a named point (the pauseAt seam), the service is dropped as a killed daemon's would be, and
 * a fresh one over the same store and host reconciles. Each VM involved must come out whole
 * (running, or suspended and resumable, or stopped and startable) or be gone without a trace.
 */
import { afterEach, beforeEach, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { callCtx, serviceHarness, type Harness } from "../testing/service-harness.ts";
import { isAlive } from "./drivers/process.ts";
import { reconcile } from "./reconcile.ts";
import { dirOf } from "./start-stop.ts";
import type { VmService } from "./service.ts";
import { listGoldens, warmRoot } from "./warm.ts";

let h: Harness;
beforeEach(async () => {
  h = await serviceHarness({ taps: 4 });
});
afterEach(async () => {
  await h.close();
});

const create = (svc: VmService, name: string) => svc.create({ name, nat: true } as never, callCtx());
const row = (name: string) => h.deps.vms.list().find((v) => v.name === name);
const pidOf = (name: string) => row(name)?.teardown.pid;

/** Starts `op` with the daemon told to hold at `point`; resolves once `times` runs of it hold there (or throws what op threw). */
async function holdAt(point: string, op: () => Promise<unknown>, times = 1): Promise<void> {
  h.faults.pauseAt = point;
  const log = h.deps.log;
  let seen = 0;
  const held = new Promise<void>((resolve) => {
    h.deps.log = (m) => {
      log(m);
      if (m === `paused at ${point}` && ++seen === times) resolve();
    };
  });
  const ended = op().then(
    () => Promise.reject(new Error(`the operation ended without holding at ${point}`)),
    (err) => Promise.reject(err),
  );
  ended.catch(() => {});
  await Promise.race([held, ended]);
  h.deps.log = log;
}

/** The old service is abandoned mid-operation (as a kill -9 leaves it); a new one reconciles. */
async function crashAndRestart(): Promise<VmService> {
  h.faults.pauseAt = undefined;
  const svc = h.restart();
  await reconcile(svc);
  return svc;
}

/** No VM directory, DNS name or NAT rule beyond those of the VMs in the store. */
function expectNoStrays() {
  const rows = h.deps.vms.list();
  expect(readdirSync(h.paths.vmsDir).sort()).toEqual(rows.map((v) => v.id).sort());
  expect([...h.records.keys()].sort()).toEqual(
    rows
      .filter((v) => v.state === "running" || v.state === "paused")
      .map((v) => v.name)
      .sort(),
  );
  expect(h.network.nat.size).toBe(rows.filter((v) => v.state === "running" || v.state === "paused").length);
}

test("held before the save: the VM runs on, its VMM kept and resumed, no saved state", async () => {
  await create(h.svc, "s1");
  const pid = pidOf("s1")!;
  await holdAt("suspend save", () => h.svc.withVm(row("s1")!.id, (vm) => h.svc.suspend(vm)));
  expect(row("s1")!.state).toBe("suspending");
  const svc = await crashAndRestart();
  expect(row("s1")!.state).toBe("running");
  expect(pidOf("s1")).toBe(pid);
  expect(isAlive(pid)).toBe(true);
  expect(existsSync(dirOf(h.deps, row("s1")!.id).savedState)).toBe(false);
  expectNoStrays();
  expect(await svc.withVm(row("s1")!.id, (vm) => svc.suspend(vm))).toContain("suspended");
});

test("held after the save, before its metadata: the save is not trusted, the VMM (paused by the save) runs on", async () => {
  await create(h.svc, "s2");
  const pid = pidOf("s2")!;
  await holdAt("suspend record", () => h.svc.withVm(row("s2")!.id, (vm) => h.svc.suspend(vm)));
  expect(h.driver.paused.has(pid)).toBe(true);
  await crashAndRestart();
  const vm = row("s2")!;
  expect(vm.state).toBe("running");
  expect(vm.last_error).toContain("during a suspend");
  expect(pidOf("s2")).toBe(pid);
  expect(h.driver.paused.has(pid)).toBe(false);
  const dir = dirOf(h.deps, vm.id);
  expect([dir.savedState, dir.savedMeta].filter(existsSync)).toEqual([]);
  expectNoStrays();
});

test("held after the metadata, before the VMM ends: the VM is suspended (its VMM ended by reconcile) and resumes", async () => {
  await create(h.svc, "s4");
  const pid = pidOf("s4")!;
  await holdAt("suspend end", () => h.svc.withVm(row("s4")!.id, (vm) => h.svc.suspend(vm)));
  const svc = await crashAndRestart();
  expect(row("s4")!.state).toBe("suspended");
  expect(isAlive(pid)).toBe(false);
  expectNoStrays();
  expect(await svc.withVm(row("s4")!.id, (vm) => svc.resume(vm, callCtx()))).toContain("resumed");
  expect(row("s4")!.state).toBe("running");
});

test("held after the metadata, before the release: the VM stays suspended and resumes", async () => {
  await create(h.svc, "s3");
  await holdAt("suspend release", () => h.svc.withVm(row("s3")!.id, (vm) => h.svc.suspend(vm)));
  const svc = await crashAndRestart();
  expect(row("s3")!.state).toBe("suspended");
  expect(row("s3")!.teardown).toEqual({});
  expectNoStrays();
  expect(await svc.withVm(row("s3")!.id, (vm) => svc.resume(vm, callCtx()))).toContain("resumed");
  expect(row("s3")!.state).toBe("running");
});

test("a fork held while its source is frozen: the copy is gone and the source runs again (not shown paused)", async () => {
  await create(h.svc, "src");
  const pid = pidOf("src")!;
  await holdAt("fork freeze", () => h.svc.withVm(row("src")!.id, (vm) => h.svc.fork(vm, { name: "cp" }, callCtx())));
  expect(h.driver.paused.has(pid)).toBe(true);
  expect(row("cp")!.state).toBe("creating");
  await crashAndRestart();
  expect(row("cp")).toBeUndefined();
  expect(row("src")!.state).toBe("running");
  expect(h.driver.paused.has(pid)).toBe(false);
  expectNoStrays();
});

test("a fork held at a copy's re-identify: the copy's VMM is killed and everything of it removed; the source is untouched", async () => {
  await create(h.svc, "src");
  await holdAt("reidentify", () => h.svc.withVm(row("src")!.id, (vm) => h.svc.fork(vm, { count: 2 }, callCtx())), 2);
  const copies = ["src-f1", "src-f2"].map((n) => row(n)!);
  const pids = copies.map((c) => c.teardown.pid!);
  expect(pids.every(isAlive)).toBe(true);
  await crashAndRestart();
  expect(copies.map((c) => row(c.name))).toEqual([undefined, undefined]);
  expect(pids.some(isAlive)).toBe(false);
  expect(row("src")!.state).toBe("running");
  expect(isAlive(pidOf("src")!)).toBe(true);
  expectNoStrays();
});

test("warm start: a golden held while its VM is frozen is dropped and the VM runs; a warm create held midway is removed, the golden kept", async () => {
  h.deps.config.warm_cache = 1;
  await holdAt("golden freeze", () => create(h.svc, "cold1"));
  const pid = pidOf("cold1")!;
  expect(readdirSync(warmRoot(h.deps)).length).toBe(1);
  let svc = await crashAndRestart();
  expect(row("cold1")!.state).toBe("running");
  expect(h.driver.paused.has(pid)).toBe(false);
  expect(readdirSync(warmRoot(h.deps))).toEqual([]);
  // A golden kept whole this time, then warm creates cut short at two points.
  await create(svc, "cold2");
  await svc.goldensSettled();
  const [golden] = listGoldens(h.deps);
  expect(golden).toBeDefined();
  for (const point of ["warm copy", "reidentify"]) {
    await holdAt(point, () => create(svc, "warm"));
    const w = row("warm")!;
    expect(w.state).toBe("creating");
    svc = await crashAndRestart();
    expect(row("warm")).toBeUndefined();
    if (w.teardown.pid) expect(isAlive(w.teardown.pid)).toBe(false);
    expect(listGoldens(h.deps).map((g) => g.key)).toEqual([golden!.key]);
    expect(readdirSync(warmRoot(h.deps))).toEqual([golden!.key]);
    expectNoStrays();
  }
  // The golden still serves a create.
  expect((await create(svc, "warm")).state).toBe("running");
});

test("a create killed while its network rules go in: the rules put in so far are withdrawn with the half-made VM", async () => {
  const applyVm = h.network.applyVm.bind(h.network);
  let entered!: () => void;
  const inRules = new Promise<void>((r) => (entered = r));
  // The NAT entry is in, the rest never comes: the daemon dies here.
  h.network.applyVm = async (vm) => {
    h.network.nat.add(vm.ip);
    entered();
    await new Promise(() => {});
  };
  void create(h.svc, "net1").catch(() => {});
  await inRules;
  h.network.applyVm = applyVm;
  await crashAndRestart();
  expect(row("net1")).toBeUndefined();
  expect(h.network.nat.size).toBe(0);
  expectNoStrays();
});

test("left by a restore cut short before its cont, and beside it a stray directory and half-made files: all put right at restart", async () => {
  await create(h.svc, "keep");
  const vm = row("keep")!;
  const dir = dirOf(h.deps, vm.id);
  // The restore had loaded the saved state (the VMM waits, paused) but not yet let it run or cleaned up.
  h.driver.paused.add(vm.teardown.pid!);
  h.deps.vms.update(vm.id, { state: "starting" });
  for (const f of [dir.savedState, dir.savedMeta, `${dir.memory}.own`]) writeFileSync(f, "stale");
  mkdirSync(join(dir.snapshotsDir, ".partial-s1"), { recursive: true });
  mkdirSync(join(dir.snapshotsDir, "s0"), { recursive: true });
  const stray = join(h.paths.vmsDir, "0123456789ab");
  mkdirSync(stray);
  writeFileSync(join(stray, "overlay.ext4"), "x");
  await crashAndRestart();
  expect(row("keep")!.state).toBe("running");
  expect(h.driver.paused.has(vm.teardown.pid!)).toBe(false);
  expect(existsSync(stray)).toBe(false);
  expect(readdirSync(dir.dir).filter((f) => f.startsWith("vmstate") || f.endsWith(".own"))).toEqual([]);
  expect(readdirSync(dir.snapshotsDir)).toEqual(["s0"]);
  expectNoStrays();
});
