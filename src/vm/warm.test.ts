/** Warm start in process (service harness): goldens kept after a cold create, used, bounded, invalidated, pruned. */
import { afterEach, beforeEach, expect, test } from "bun:test";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { callCtx, serviceHarness, type Harness } from "../testing/service-harness.ts";
import { checkReidentified } from "./fork.ts";
import { diskMismatch, keyParts, listGoldens, pruneGoldens, warmKey, warmRoot } from "./warm.ts";

const GIB = 2 ** 30;

let h: Harness;
beforeEach(async () => {
  h = await serviceHarness({ taps: 6 });
  h.deps.config.warm_cache = 2;
});
afterEach(async () => {
  await h.svc.goldensSettled();
  await h.close();
});

const create = async (name: string, extra: Record<string, unknown> = {}) => {
  const vm = await h.svc.create({ name, ...extra } as never, callCtx());
  await h.svc.goldensSettled();
  return vm;
};
const restores = () => h.driver.calls.filter((c) => c.startsWith("restore")).length;

test("the key changes with every part it is made of; the disk size is not one of them", () => {
  const image = h.deps.artifacts.image("bookworm")!;
  const kernel = h.deps.artifacts.kernel("default")!;
  const base = warmKey(keyParts(image, kernel, 2, 1024, "qemu"));
  expect(warmKey(keyParts(image, kernel, 2, 1024, "qemu"))).toBe(base);
  expect(warmKey({ ...keyParts(image, kernel, 2, 1024, "qemu"), diskBytes: 4 * GIB } as never)).toBe(base);
  const others = [
    keyParts({ ...image, fingerprint: "other" }, kernel, 2, 1024, "qemu"),
    keyParts(image, { ...kernel, sha256: "1".repeat(64) }, 2, 1024, "qemu"),
    keyParts(image, kernel, 1, 1024, "qemu"),
    keyParts(image, kernel, 2, 512, "qemu"),
    keyParts(image, kernel, 2, 1024, "firecracker"),
  ];
  for (const p of others) expect(warmKey(p)).not.toBe(base);
});

test("a golden serves its own disk size and any larger one, never a smaller one", () => {
  expect(diskMismatch(8 * GIB, 8 * GIB)).toBeNull();
  expect(diskMismatch(8 * GIB, 20 * GIB)).toBeNull();
  expect(diskMismatch(8 * GIB, 4 * GIB)).toContain("larger than the 4294967296 asked for");
  expect(diskMismatch(8 * GIB, 8 * GIB + 100)).toContain("512-byte sectors");
  expect(diskMismatch(undefined as never, 8 * GIB)).toContain("does not record its disk size");
});

test("a larger --disk restores the golden and grows the copy's work disk online; a smaller one boots cold and keeps its smaller golden", async () => {
  await create("g1", { disk: 8 * GIB });
  expect(listGoldens(h.deps).map((g) => g.diskBytes)).toEqual([8 * GIB]);
  const steps: string[] = [];
  const big = await h.svc.create(
    { name: "g2", disk: 9 * GIB } as never,
    { ...callCtx(), progress: (e: { stage: string; status: string }) => void (e.status === "done" && steps.push(e.stage)) } as never,
  );
  await h.svc.goldensSettled();
  expect(restores()).toBe(1);
  expect(steps).toContain("warm copy");
  expect(steps.indexOf("grow disk")).toBeGreaterThan(steps.indexOf("wait agent"));
  expect(steps.indexOf("grow disk")).toBeLessThan(steps.indexOf("reidentify"));
  expect(statSync(join(big.dir, "work.ext4")).size).toBe(9 * GIB);
  expect(h.driver.calls.filter((c) => c.startsWith("grow "))).toEqual([`grow ${big.pid} work ${9 * GIB}`]);
  expect(h.driver.guests.get(big.pid!)!["/commands"]).toContain("resize2fs /dev/vdc");
  // The same size restores without growing.
  await create("g3", { disk: 8 * GIB });
  expect(restores()).toBe(2);
  expect(h.driver.calls.filter((c) => c.startsWith("grow ")).length).toBe(1);
  // A smaller one boots cold, and its golden replaces the larger.
  await create("g4", { disk: 4 * GIB });
  expect(restores()).toBe(2);
  expect(listGoldens(h.deps).map((g) => g.diskBytes)).toEqual([4 * GIB]);
  await create("g5", { disk: 8 * GIB });
  expect(restores()).toBe(3);
});

test("an answer without the grow step (an older agent) fails the warm start, which then boots cold", async () => {
  expect(() => checkReidentified({ done: ["clock", "ssh host key"] }, 9 * GIB)).toThrow("did not grow the work disk");
  expect(() => checkReidentified({ done: ["clock"] }, undefined)).not.toThrow();
});

test("a cold create keeps a golden in the background; the next create restores and re-identifies a copy of it; --cold boots", async () => {
  const first = await create("w1");
  expect(restores()).toBe(0);
  const goldens = listGoldens(h.deps);
  expect(goldens.length).toBe(1);
  expect(goldens[0]!.image).toBe("bookworm");
  expect(h.driver.calls.filter((c) => /^(snapshot|resume) /.test(c)).length).toBe(2);
  expect(h.deps.vms.get(first.id)!.state).toBe("running");

  const warm = await create("w2");
  expect(restores()).toBe(1);
  expect(warm.state).toBe("running");
  expect(warm.ip).not.toBe(first.ip);
  expect(h.records.get("w2")).toBe(warm.ip);
  expect(h.driver.calls.some((c) => c.endsWith(" up") && c.startsWith("link"))).toBe(true);
  expect(listGoldens(h.deps).length).toBe(1);

  await create("w3", { cold: true });
  expect(restores()).toBe(1);
});

test("warm_cache bounds the goldens kept (least recently used go first); 0 keeps none", async () => {
  await create("a", { cpus: 1 });
  await create("b", { cpus: 2 });
  await create("c", { cpus: 3 });
  const kept = listGoldens(h.deps);
  expect(kept.map((g) => g.cpus).sort()).toEqual([2, 3]);
  h.deps.config.warm_cache = 0;
  await create("d", { cpus: 4 });
  expect(listGoldens(h.deps).length).toBe(2);
  expect(restores()).toBe(0);
});

test("a golden whose image changed is not used and is pruned; prune --all empties the cache, unfinished dirs go too", async () => {
  await create("x1");
  const image = h.deps.artifacts.image("bookworm")!;
  h.deps.artifacts.putImage({ ...image, fingerprint: "rebuilt" });
  mkdirSync(join(warmRoot(h.deps), ".left-by-a-crash.tmp"), { recursive: true });
  mkdirSync(join(warmRoot(h.deps), "half-made"), { recursive: true });
  const removed = pruneGoldens(h.deps);
  expect(removed.map((r) => r.reason).sort()).toEqual(["image bookworm changed", "unfinished", "unfinished"]);
  expect(existsSync(join(warmRoot(h.deps), "half-made"))).toBe(false);
  expect(listGoldens(h.deps)).toEqual([]);
  await create("x2");
  expect(restores()).toBe(0);
  await create("x3");
  expect(restores()).toBe(1);
  // A stale golden is also never used, even before a prune.
  h.deps.artifacts.putImage({ ...image, fingerprint: "rebuilt again" });
  await create("x4");
  expect(restores()).toBe(1);
  expect(pruneGoldens(h.deps, { all: true }).length).toBe(1);
  expect(listGoldens(h.deps)).toEqual([]);
});
