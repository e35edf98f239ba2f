/** Warm start in process (service harness): goldens kept after a cold create, used, bounded, invalidated, pruned. */
import { afterEach, beforeEach, expect, test } from "bun:test";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { callCtx, serviceHarness, type Harness } from "../testing/service-harness.ts";
import { keyParts, listGoldens, pruneGoldens, warmKey, warmRoot } from "./warm.ts";

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

test("the key changes with every part it is made of", () => {
  const image = h.deps.artifacts.image("bookworm")!;
  const kernel = h.deps.artifacts.kernel("default")!;
  const base = warmKey(keyParts(image, kernel, 2, 1024, 8 * 2 ** 30, "qemu"));
  expect(warmKey(keyParts(image, kernel, 2, 1024, 8 * 2 ** 30, "qemu"))).toBe(base);
  const others = [
    keyParts({ ...image, fingerprint: "other" }, kernel, 2, 1024, 8 * 2 ** 30, "qemu"),
    keyParts(image, { ...kernel, sha256: "1".repeat(64) }, 2, 1024, 8 * 2 ** 30, "qemu"),
    keyParts(image, kernel, 1, 1024, 8 * 2 ** 30, "qemu"),
    keyParts(image, kernel, 2, 512, 8 * 2 ** 30, "qemu"),
    keyParts(image, kernel, 2, 1024, 4 * 2 ** 30, "qemu"),
    keyParts(image, kernel, 2, 1024, 8 * 2 ** 30, "firecracker"),
  ];
  for (const p of others) expect(warmKey(p)).not.toBe(base);
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
