/** Pause, suspend, snapshots and their reconcile after a daemon crash, in process (service harness). */
import { afterEach, beforeEach, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { callCtx, serviceHarness, type Harness } from "../testing/service-harness.ts";
import { isAlive } from "./drivers/process.ts";
import { reconcile } from "./reconcile.ts";
import { dirOf } from "./start-stop.ts";

let h: Harness;
beforeEach(async () => {
  h = await serviceHarness({ taps: 4 });
});
afterEach(async () => {
  await h.close();
});

const create = (name: string) => h.svc.create({ name, nat: true } as never, callCtx());
const row = (name: string) => h.deps.vms.list().find((v) => v.name === name)!;

test("pause and resume change the state; suspend ends the VMM and releases NAT and DNS; resume restores", async () => {
  const vm = await create("p1");
  expect(await h.svc.pause(row("p1"))).toBe("paused");
  expect(row("p1").state).toBe("paused");
  expect(await h.svc.resume(row("p1"), callCtx())).toBe("resumed");
  const pid = row("p1").teardown.pid!;
  expect(await h.svc.suspend(row("p1"))).toContain("suspended");
  expect(row("p1").state).toBe("suspended");
  expect(isAlive(pid)).toBe(false);
  expect(h.records.has("p1")).toBe(false);
  expect(h.network.nat.size).toBe(0);
  const dir = dirOf(h.deps, vm.id);
  expect(existsSync(dir.savedMeta) && existsSync(dir.savedState)).toBe(true);
  expect(await h.svc.resume(row("p1"), callCtx())).toContain("resumed from saved state");
  expect(row("p1").state).toBe("running");
  expect(h.records.get("p1")).toBe(vm.ip);
  expect(h.driver.calls.filter((c) => c.startsWith("restore"))).toEqual([`restore ${vm.id}`]);
  expect(existsSync(dir.savedState)).toBe(false);
});

test("a state the driver cannot load is refused with the --cold hint and the VM stays suspended; --cold boots", async () => {
  const vm = await create("p2");
  await h.svc.suspend(row("p2"));
  const dir = dirOf(h.deps, vm.id);
  writeFileSync(dir.savedMeta, JSON.stringify({ vmm: "firecracker", version: "0.1.0", accel: "kvm", savedAt: "" }));
  const err = (await h.svc.resume(row("p2"), callCtx()).catch((e) => e)) as { message: string; hint: string };
  expect(err.message).toContain("cannot resume p2: the saved state was written by Firecracker 0.1.0");
  expect(err.hint).toContain("banger vm start --cold p2");
  expect(row("p2").state).toBe("suspended");
  expect(await h.svc.start(row("p2"), callCtx(), { cold: true })).toBe("started");
  expect(row("p2").state).toBe("running");
  expect(existsSync(dir.savedMeta) || existsSync(dir.memory)).toBe(false);
});

test("reconcile after a crash: a finished suspend stays suspended, an unfinished one with a live VMM runs on, without one it stops", async () => {
  await create("c1");
  await create("c2");
  await create("c3");
  await h.svc.suspend(row("c1"));
  // c2: the daemon died while the state was being written (no metadata yet); its VMM lives.
  h.deps.vms.update(row("c2").id, { state: "suspending" });
  writeFileSync(dirOf(h.deps, row("c2").id).savedState, "partial");
  // c3: died during the suspend after the VMM was gone, before the metadata was written.
  const c3pid = row("c3").teardown.pid!;
  h.deps.vms.update(row("c3").id, { state: "suspending" });
  process.kill(c3pid, "SIGKILL");
  for (let i = 0; i < 100 && isAlive(c3pid); i++) await Bun.sleep(10);
  const svc = h.restart();
  const report = await reconcile(svc);
  expect(report.kept.sort()).toEqual(["c1", "c2"]);
  expect(report.stopped).toEqual(["c3"]);
  expect(row("c1").state).toBe("suspended");
  expect(row("c2").state).toBe("running");
  expect(existsSync(dirOf(h.deps, row("c2").id).savedState)).toBe(false);
  expect(row("c3").state).toBe("stopped");
  expect(existsSync(dirOf(h.deps, row("c3").id).savedState)).toBe(false);
  expect(await svc.resume(row("c1"), callCtx())).toContain("resumed from saved state");
});

test("snapshots: disk-only and --memory are listed, restored (memory resumes, disks boot again) and deleted", async () => {
  const vm = await create("s1");
  const dir = dirOf(h.deps, vm.id);
  writeFileSync(dir.overlay, "A");
  expect(await h.svc.snapshotCreate(row("s1"), "d1", false)).toContain("snapshot d1 taken (disks");
  expect(await h.svc.snapshotCreate(row("s1"), "m1", true)).toContain("snapshot m1 taken (disks and memory");
  expect(row("s1").state).toBe("running");
  expect(h.driver.calls.filter((c) => /^(pause|resume|snapshot) /.test(c)).map((c) => c.split(" ")[0])).toEqual(["pause", "resume", "snapshot", "resume"]);
  await expect(h.svc.snapshotCreate(row("s1"), "d1", false)).rejects.toThrow('already has a snapshot "d1"');
  expect((await h.svc.snapshotList(row("s1"))).map((s) => [s.name, s.memory])).toEqual([
    ["d1", false],
    ["m1", true],
  ]);
  writeFileSync(dir.overlay, "B");
  expect(await h.svc.snapshotRestore(row("s1"), "d1", callCtx())).toContain("restored d1 (disks); started");
  expect(await Bun.file(dir.overlay).text()).toBe("A");
  expect(await h.svc.snapshotRestore(row("s1"), "m1", callCtx())).toContain("resumed from saved state");
  expect(row("s1").state).toBe("running");
  await expect(h.svc.snapshotRestore(row("s1"), "nope", callCtx())).rejects.toThrow('no snapshot "nope"; it has d1, m1');
  await h.svc.snapshotDelete(row("s1"), "d1");
  expect((await h.svc.snapshotList(row("s1"))).map((s) => s.name)).toEqual(["m1"]);
});

test("fork --count 2: copies are created with their own IP, MAC, TAP and name, re-identified with the link down, the source runs on", async () => {
  const src = await create("src");
  const r = await h.svc.fork(row("src"), { count: 2 }, callCtx());
  expect(r.errors).toEqual([]);
  expect(r.copies.map((c) => c.name)).toEqual(["src-f1", "src-f2"]);
  const all = [src, ...r.copies];
  for (const key of ["ip", "mac", "tap", "cid"] as const) expect(new Set(all.map((v) => v[key])).size).toBe(3);
  expect(r.copies.every((c) => c.state === "running")).toBe(true);
  expect(row("src").state).toBe("running");
  expect(h.records.get("src-f1")).toBe(r.copies[0]!.ip);
  expect(h.driver.calls.filter((c) => c.startsWith("link")).map((c) => c.split(" ")[2])).toEqual(["up", "up"]);
  await expect(h.svc.fork(row("src"), { name: "src-f1" }, callCtx())).rejects.toThrow('a VM named "src-f1" already exists');
  await h.svc.stop(row("src"));
  await expect(h.svc.fork(row("src"), {}, callCtx())).rejects.toThrow("only a running VM can be forked");
});
