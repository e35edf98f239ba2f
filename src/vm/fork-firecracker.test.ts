/**
 * Fork and warm start through the Firecracker driver and the fake Firecracker, in process: the
 * VM service is the same as for QEMU, the copies load one snapshot against their own directories,
 * TAPs and vsock sockets, and each takes its own identity from the pretend guest's agent.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { callCtx, serviceHarness, type Harness } from "../testing/service-harness.ts";
import { hasBin, isRoot, projectRoot, testNeeds } from "../testing/skip.ts";
import { FirecrackerDriver } from "./drivers/firecracker.ts";
import { listGoldens } from "./warm.ts";

const needs: Array<[boolean, string]> = [
  [isRoot, "needs root (the fake opens real TAPs, as Firecracker does)"],
  [hasBin("ip"), "needs iproute2"],
];
const fake = [process.execPath, join(projectRoot, "src/testing/fake-firecracker.ts")];
const taps = Array.from({ length: 6 }, (_, i) => `bfw${randomBytes(3).toString("hex")}${i}`);
const T = 60_000;
let h: Harness | null = null;

const ip = (...args: string[]) => Bun.spawnSync(["ip", ...args], { stderr: "pipe" });

beforeAll(async () => {
  if (!needs.every(([ok]) => ok)) return;
  for (const t of taps) ip("tuntap", "add", "dev", t, "mode", "tap");
  h = await serviceHarness({ tapNames: taps, vmm: new FirecrackerDriver({ bin: fake }) });
  h.deps.config.warm_cache = 1;
});
afterAll(async () => {
  await h?.close();
  for (const t of taps) ip("link", "del", t);
});

/** What the pretend guest behind a running fake calls itself (written by its re-identify), or null. */
function guestHostname(pid: number | null): string | null {
  const file = join(tmpdir(), `fake-fc-guest-${pid}`, "etc/hostname");
  return existsSync(file) ? readFileSync(file, "utf8").trim() : null;
}

describe("fork and warm start under Firecracker (fake)", () => {
  testNeeds(
    "a cold create keeps a Firecracker golden; fork --count 2 makes re-identified copies; the source runs on",
    needs,
    async () => {
      const svc = h!.svc;
      const src = await svc.create({ name: "src" } as never, callCtx());
      await svc.goldensSettled();
      expect(listGoldens(h!.deps).map((g) => g.vmm)).toEqual(["firecracker"]);
      const r = await svc.fork(svc.find("src"), { count: 2 }, callCtx());
      expect(r.errors).toEqual([]);
      expect(r.copies.map((c) => [c.name, c.state])).toEqual([
        ["src-f1", "running"],
        ["src-f2", "running"],
      ]);
      expect(new Set([src.ip, ...r.copies.map((c) => c.ip)]).size).toBe(3);
      expect(new Set([src.tap, ...r.copies.map((c) => c.tap)]).size).toBe(3);
      for (const c of r.copies) {
        expect(guestHostname(c.pid)).toBe(c.name);
        expect(readFileSync(join(c.dir, "console.log"), "utf8")).toContain("restored from snapshot");
      }
      expect(svc.find("src").state).toBe("running");
      expect(guestHostname(svc.view(svc.find("src")).pid)).toBeNull();
    },
    T,
  );

  testNeeds(
    "a warm create restores the golden into its own directory and re-identifies it; --cold boots",
    needs,
    async () => {
      const svc = h!.svc;
      const warm = await svc.create({ name: "warm1" } as never, callCtx());
      expect(warm.state).toBe("running");
      expect(readFileSync(join(warm.dir, "console.log"), "utf8")).toContain("restored from snapshot");
      expect(guestHostname(warm.pid)).toBe("warm1");
      expect(existsSync(join(warm.dir, "vmstate"))).toBe(false);
      // The pretend guest's identity is part of its snapshot: it survives a suspend and resume.
      await svc.suspend(svc.find("warm1"));
      await svc.resume(svc.find("warm1"), callCtx());
      expect(guestHostname(svc.view(svc.find("warm1")).pid)).toBe("warm1");
      const cold = await svc.create({ name: "cold1", cold: true } as never, callCtx());
      expect(readFileSync(join(cold.dir, "console.log"), "utf8")).not.toContain("restored from snapshot");
    },
    T,
  );

  testNeeds(
    "a warm create with a larger --disk grows the copy's work disk: PATCH /drives re-reads it and the guest's agent resizes /root",
    needs,
    async () => {
      const svc = h!.svc;
      const [golden] = listGoldens(h!.deps);
      const bytes = golden!.diskBytes + 2 ** 30;
      const stages: string[] = [];
      const progress = (e: { stage: string; status: string }) => void (e.status === "done" && stages.push(e.stage));
      const big = await svc.create({ name: "big1", disk: bytes } as never, { ...callCtx(), progress } as never);
      expect(big.state).toBe("running");
      expect(stages).toEqual(expect.arrayContaining(["warm copy", "grow disk", "reidentify"]));
      expect(readFileSync(join(big.dir, "console.log"), "utf8")).toContain("restored from snapshot");
      expect(statSync(join(big.dir, "work.ext4")).size).toBe(bytes);
      const guest = join(tmpdir(), `fake-fc-guest-${big.pid}`);
      expect(readFileSync(join(guest, "sys/class/block/vdc/size"), "utf8").trim()).toBe(String(bytes / 512));
      expect(readFileSync(join(guest, "commands"), "utf8")).toContain("resize2fs /dev/vdc");
    },
    T,
  );
});
