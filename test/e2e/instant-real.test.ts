/**
 * Pause, resume, suspend and snapshots on ONE real guest under QEMU (TCG), through the CLI.
 * The checks run in order on the same VM, so the file boots a single guest.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { realGuestChecks, realHome, type RealHome } from "../../src/testing/real-env.ts";
import { testNeeds } from "../../src/testing/skip.ts";
import { findByArgs, isAlive } from "../../src/vm/drivers/process.ts";
import { qmpArg } from "../../src/vm/drivers/qemu.ts";

const needs = realGuestChecks();
let h: RealHome;
let dir = "";
const T = 300_000;

beforeAll(async () => {
  if (needs.some(([ok]) => !ok)) return;
  h = await realHome({ taps: 4 });
}, 900_000);

afterAll(async () => {
  if (!h) return;
  await h.run(["vm", "delete", "--force", "i1"]);
  await h.teardownNet();
  await h.cleanup();
});

const ssh = async (script: string) => {
  const r = await h.run(["vm", "ssh", "i1", "--", "sh", "-c", script]);
  if (r.code !== 0) throw new Error(`ssh ${script}: ${r.stderr}`);
  return r.stdout.trim();
};
const state = async () => (JSON.parse((await h.run(["vm", "show", "i1", "--json"])).stdout) as { state: string }).state;
const qemuAlive = () => findByArgs("-qmp", qmpArg(dir)).filter(isAlive);
const timed = async (args: string[]) => {
  const t0 = performance.now();
  const r = await h.run(args);
  return { ...r, ms: Math.round(performance.now() - t0) };
};

describe("instant VMs on a real guest under QEMU (needs qemu, mmdebstrap, root)", () => {
  testNeeds("setup: a VM with a counter loop, a long sleep, a file in /dev/shm and one in /root", needs, async () => {
    const r = await h.run(["vm", "create", "--name", "i1", "--json"]);
    expect(r.code).toBe(0);
    dir = JSON.parse(r.stdout.trim().split("\n").at(-1)!).dir;
    await ssh("nohup sh -c 'n=0; while true; do n=$((n+1)); echo $n > /root/counter; sleep 1; done' >/dev/null 2>&1 & nohup sleep 100000 >/dev/null 2>&1 & echo $! > /root/sleep.pid; echo shm > /dev/shm/keep; echo root > /root/keep; sync");
    expect(existsSync(join(dir, "ram"))).toBe(true);
  }, T);

  testNeeds("pause: the counter stops while paused, goes on after resume, and ssh answers", needs, async () => {
    const before = Number(await ssh("cat /root/counter"));
    const t0 = performance.now();
    const p = await timed(["vm", "pause", "i1"]);
    expect(p.code).toBe(0);
    expect(await state()).toBe("paused");
    const list = await h.run(["vm", "list"]);
    expect(list.stdout).toMatch(/i1\s+paused/);
    const refused = await h.run(["vm", "ssh", "i1", "--", "true"]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("paused");
    await Bun.sleep(5000);
    const r = await timed(["vm", "resume", "i1"]);
    expect(r.code).toBe(0);
    const right = Number(await ssh("cat /root/counter"));
    const elapsedS = (performance.now() - t0) / 1000;
    // The loop ticks at most once a second; five of the elapsed seconds were spent frozen.
    expect(right - before).toBeLessThanOrEqual(Math.ceil(elapsedS) - 4);
    await Bun.sleep(3000);
    expect(Number(await ssh("cat /root/counter"))).toBeGreaterThan(right);
    console.log(`pause ${p.ms} ms, resume ${r.ms} ms (CLI end to end)`);
  }, T);

  testNeeds("suspend: no QEMU while suspended; resume keeps the sleep's PID, /dev/shm and /root", needs, async () => {
    const pid = await ssh("cat /root/sleep.pid");
    const s = await timed(["vm", "suspend", "i1"]);
    expect(s.code).toBe(0);
    expect(s.stdout).toContain("suspended");
    expect(await state()).toBe("suspended");
    expect(qemuAlive()).toEqual([]);
    const stateBytes = statSync(join(dir, "vmstate")).size;
    expect(stateBytes).toBeLessThan(4 * 1024 * 1024);
    const r = await timed(["vm", "resume", "i1"]);
    expect(r.code).toBe(0);
    expect(await state()).toBe("running");
    expect(await ssh(`kill -0 ${pid} && echo alive`)).toBe("alive");
    expect(await ssh("cat /dev/shm/keep /root/keep")).toBe("shm\nroot");
    expect(existsSync(join(dir, "vmstate"))).toBe(false);
    console.log(`suspend ${s.ms} ms (state ${Math.ceil(stateBytes / 1024)} KiB), resume ${r.ms} ms (CLI end to end, ready for ssh)`);
  }, T);

  testNeeds("a saved state from another QEMU version is refused with a message; vm start resumes the right one", needs, async () => {
    expect((await h.run(["vm", "suspend", "i1"])).code).toBe(0);
    const metaPath = join(dir, "vmstate.json");
    const meta = readFileSync(metaPath, "utf8");
    writeFileSync(metaPath, JSON.stringify({ ...JSON.parse(meta), version: "6.0.0" }));
    const refused = await h.run(["vm", "resume", "i1"]);
    expect(refused.code).not.toBe(0);
    expect(refused.stdout + refused.stderr).toContain("written by QEMU 6.0.0");
    expect(refused.stdout + refused.stderr).toContain("--cold");
    expect(await state()).toBe("suspended");
    const other = JSON.parse(meta).accel === "kvm" ? "tcg" : "kvm";
    writeFileSync(metaPath, JSON.stringify({ ...JSON.parse(meta), accel: other }));
    const accel = await h.run(["vm", "resume", "i1"]);
    expect(accel.stdout + accel.stderr).toContain(`written under ${other}`);
    writeFileSync(metaPath, meta);
    expect((await h.run(["vm", "start", "i1"])).code).toBe(0);
    expect(await ssh("cat /root/keep")).toBe("root");
  }, T);
});
