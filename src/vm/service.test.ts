/**
 * VmService in process: the recording driver and network of src/testing/service-harness.ts,
 * an in-memory store, real disk tools on a temp dir. Each test runs well under a second.
 */
import { afterEach, beforeEach, expect, test } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { callCtx, serviceHarness, type Harness } from "../testing/service-harness.ts";
import { createSteps } from "./create.ts";
import { isAlive } from "./drivers/process.ts";
import { Mutex } from "./locks.ts";
import { reconcile, StatsPoller } from "./reconcile.ts";
import { dirOf } from "./start-stop.ts";
import { stepNames } from "./steps.ts";

let h: Harness;
beforeEach(async () => {
  h = await serviceHarness({ taps: 4 });
});
afterEach(async () => {
  await h.close();
});

const create = (name: string, extra: Record<string, unknown> = {}) => h.svc.create({ name, ...extra } as never, callCtx());
const vmDirs = () => readdirSync(h.paths.vmsDir);
const pidOf = (name: string) => h.deps.vms.list().find((v) => v.name === name)?.teardown.pid;

test("create reaches running with its DNS name and a live VMM; delete leaves nothing", async () => {
  const vm = await create("a1", { nat: true });
  expect(vm.state).toBe("running");
  expect(h.records.get("a1")).toBe(vm.ip);
  const pid = pidOf("a1")!;
  expect(isAlive(pid)).toBe(true);
  expect(h.network.calls).toContain(`net ${vm.ip} nat`);
  await h.svc.delete(h.svc.find("a1"), true);
  expect(h.deps.vms.list()).toEqual([]);
  expect(vmDirs()).toEqual([]);
  expect(h.records.size).toBe(0);
  expect(isAlive(pid)).toBe(false);
  expect(h.network.nat.size).toBe(0);
});

test("policies and groups: applied at start, changed live by set, withdrawn at delete", async () => {
  const a = await create("g1", { net: "allow:svc.test,10.0.0.0/8:443", group: "Web" });
  const b = await create("g2", { group: "web" });
  expect(a.net).toBe("allow:svc.test,10.0.0.0/8:443");
  expect(a.group).toBe("web");
  expect(h.network.calls).toContain(`net ${a.ip} allow:svc.test,10.0.0.0/8:443`);
  expect(h.network.calls.at(-1)).toBe(`groups ${a.ip}:web,${b.ip}:web`);
  expect(await h.svc.set(h.svc.find("g1"), { net: "nat" })).toBe("net nat");
  expect(h.network.nat.has(a.ip)).toBe(true);
  expect(await h.svc.set(h.svc.find("g2"), { group: "" })).toBe("no group");
  expect(h.network.calls.at(-1)).toBe(`groups ${a.ip}:web`);
  await expect(h.svc.set(h.svc.find("g1"), { net: "allow:" })).rejects.toThrow(/empty rule/);
  await expect(create("g3", { net: "open" })).rejects.toThrow(/invalid network policy "open"/);
  await expect(create("g4", { net: "allow:a.test", nat: true })).rejects.toThrow(/contradict/);
  await h.svc.delete(h.svc.find("g1"), true);
  await h.svc.delete(h.svc.find("g2"), true);
  expect(h.network.calls.filter((c) => c.startsWith("net-"))).toEqual([`net- ${a.ip}`, `net- ${b.ip}`]);
  expect(h.network.nat.size).toBe(0);
});

test("a failure at each create step is undone completely: no row, directory, VMM, DNS name or NAT rule", async () => {
  const names = stepNames(createSteps(h.deps, h.svc.rt, new Mutex()));
  expect(names).toContain("boot");
  for (const step of names) {
    h.faults.failAt = step;
    const err = await create(`f-${step.replace(/\W/g, "")}`, { nat: true }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain(`injected failure at ${step}`);
    expect(h.deps.vms.list()).toEqual([]);
    expect(vmDirs()).toEqual([]);
    expect(h.records.size).toBe(0);
    expect(h.network.nat.size).toBe(0);
    expect(h.svc.rt.handles.size).toBe(0);
  }
  // The VMM was started for the steps from boot on, and every one was killed again.
  expect(h.driver.calls.filter((c) => c.startsWith("start")).length).toBeGreaterThan(0);
});

test("a VMM that fails to start leaves the VM undone and the TAP free for the next create", async () => {
  h.driver.failStart = new Error("VMM crashed at boot");
  await expect(create("crash")).rejects.toThrow("VMM crashed at boot");
  expect(h.deps.vms.list()).toEqual([]);
  h.driver.failStart = null;
  const ok = await create("after");
  expect(ok.state).toBe("running");
});

test("parallel creates get distinct addresses, MACs, TAPs and CIDs; an exhausted TAP pool is a clear error", async () => {
  const vms = await Promise.all(["p1", "p2", "p3", "p4"].map((n) => create(n)));
  const rows = h.deps.vms.list();
  for (const key of ["ip", "mac", "tap", "cid"] as const) expect(new Set(rows.map((r) => r[key])).size).toBe(4);
  expect(vms.every((v) => v.state === "running")).toBe(true);
  expect(h.network.nat.size).toBe(0);
  const err = await create("p5").catch((e: Error) => e);
  expect((err as Error).message).toMatch(/TAP|tap/);
  expect(h.deps.vms.list()).toHaveLength(4);
});

test("known_hosts follows creates and deletes, each VM's line its own host key", async () => {
  const [a, b] = await Promise.all(["k1", "k2"].map((n) => create(n)));
  const pub = (id: string) =>
    readFileSync(`${dirOf(h.deps, id).hostKey}.pub`, "utf8")
      .trim()
      .split(" ")
      .slice(0, 2)
      .join(" ");
  const known = () => readFileSync(h.paths.knownHosts, "utf8");
  const [ka, kb] = [pub(a!.id), pub(b!.id)];
  expect(ka).not.toBe(kb);
  expect(known()).toContain(`k1.vm,${a!.ip} ${ka}`);
  expect(known()).toContain(`k2.vm,${b!.ip} ${kb}`);
  await h.svc.delete(h.svc.find("k1"), true);
  const c = await create("k3");
  expect(known()).not.toContain("k1.vm");
  expect(known()).not.toContain(ka);
  expect(known()).toContain(`k2.vm,${b!.ip} ${kb}`);
  expect(known()).toContain(`k3.vm,${c.ip} ${pub(c.id)}`);
});

test("a duplicate name is refused and the first VM is untouched", async () => {
  await create("dup");
  await expect(create("dup")).rejects.toThrow(/dup/);
  expect(h.deps.vms.list()).toHaveLength(1);
  expect(h.deps.vms.list()[0]!.state).toBe("running");
});

test("reconcile after a restart keeps the alive, stops the dead, and survives a corrupt handle file", async () => {
  await create("alive");
  await create("dead");
  await create("corrupt");
  process.kill(pidOf("dead")!, "SIGKILL");
  while (isAlive(pidOf("dead")!)) await Bun.sleep(5);
  writeFileSync(dirOf(h.deps, h.svc.find("corrupt").id).handles, "{ not json");
  const fresh = h.restart();
  const report = await reconcile(fresh);
  expect(report.kept).toContain("alive");
  expect(report.stopped).toContain("dead");
  const byName = Object.fromEntries(h.deps.vms.list().map((v) => [v.name, v.state]));
  expect(byName.alive).toBe("running");
  expect(byName.dead).toBe("stopped");
  // The corrupt file is ignored: the row's recorded pid still identifies the live VMM.
  expect(byName.corrupt).toBe("running");
  expect(h.records.has("alive") && !h.records.has("dead")).toBe(true);
});

test("a create interrupted mid-way (state creating) is removed by reconcile, VMM included", async () => {
  h.faults.pauseAt = "wait agent";
  const abort = new AbortController();
  const pending = h.svc.create({ name: "half" } as never, { progress: () => {}, signal: abort.signal }).catch(() => null);
  while (!h.deps.vms.list().some((v) => v.teardown.pid)) await Bun.sleep(5);
  const pid = pidOf("half")!;
  // A daemon crash here: the new service sees a "creating" row with a live VMM.
  const report = await reconcile(h.restart());
  expect(report.removed).toEqual(["half"]);
  expect(isAlive(pid)).toBe(false);
  expect(vmDirs()).toEqual([]);
  abort.abort();
  await pending;
  expect(h.deps.vms.list()).toEqual([]);
});

test("operations on one VM run one at a time; on different VMs they overlap", async () => {
  const a = (await create("s1")).id;
  const b = (await create("s2")).id;
  const order: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const first = h.svc.withVm(a, async () => {
    order.push("a1 start");
    await gate;
    order.push("a1 end");
  });
  const second = h.svc.withVm(a, async () => void order.push("a2"));
  const other = h.svc.withVm(b, async () => void order.push("b"));
  await other;
  expect(order).toEqual(["a1 start", "b"]);
  release();
  await Promise.all([first, second]);
  expect(order).toEqual(["a1 start", "b", "a1 end", "a2"]);
});

test("a VM deleted while the stats poll waits for its lock is skipped, not an error that would end the daemon", async () => {
  await create("s1");
  const vm = h.svc.find("s1");
  const poller = new StatsPoller(h.svc);
  let polled: Promise<void> | undefined;
  await h.svc.withVm(vm.id, async (row) => {
    process.kill(row.teardown.pid!, "SIGKILL");
    while (h.svc.vmmAlive(row)) await Bun.sleep(5);
    polled = poller.poll(); // sees a dead VMM of a running VM and waits for this lock
    await Bun.sleep(10);
    await h.svc.delete(row, true);
  });
  await polled;
  expect(h.deps.vms.list()).toEqual([]);
});
