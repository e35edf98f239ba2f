/** Pause, resume and suspend through the CLI against the fake Firecracker (snapshot create/load for real). */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { bangerBin, type TestHome } from "../../src/testing/cli.ts";
import { fakeFirecrackerHome } from "../../src/testing/fake-env.ts";
import { hasBin, isRoot, testNeeds } from "../../src/testing/skip.ts";
import { findByArgs, isAlive } from "../../src/vm/drivers/process.ts";

const needs: Array<[boolean, string]> = [
  [existsSync(bangerBin), "dist/banger not built"],
  [isRoot, "needs root (bridge and TAPs)"],
  [hasBin("nft") || hasBin("iptables"), "needs nftables or iptables"],
];
let h: TestHome & { teardownNet(): Promise<void> };
let dir = "";
const T = 120_000;

beforeAll(async () => {
  if (needs.every(([ok]) => ok)) h = await fakeFirecrackerHome({ taps: 6 });
});
afterAll(async () => {
  if (!h) return;
  await h.run(["vm", "delete", "--force", "f1", "f1-f1", "f1-f2"]);
  await h.teardownNet();
  await h.cleanup();
});

const show = async () => JSON.parse((await h.run(["vm", "show", "f1", "--json"])).stdout) as { state: string; pid: number | null };
const fcAlive = () => findByArgs("--api-sock", join(dir, "fc.sock")).filter(isAlive);

describe("pause, resume and suspend against the fake Firecracker", () => {
  testNeeds(
    "pause freezes the guest (the agent is silent), resume lets it answer again",
    needs,
    async () => {
      const r = await h.run(["vm", "create", "--name", "f1", "--json"]);
      expect(r.code).toBe(0);
      dir = JSON.parse(r.stdout.trim().split("\n").at(-1)!).dir;
      expect((await h.run(["vm", "pause", "f1"])).stdout).toContain("paused");
      expect((await show()).state).toBe("paused");
      expect((await h.run(["vm", "list"])).stdout).toMatch(/f1\s+paused/);
      const health = await h.run(["vm", "health", "f1"]);
      expect(health.code).not.toBe(0);
      expect(health.stderr).toContain("paused");
      expect((await h.run(["vm", "resume", "f1"])).stdout).toContain("resumed");
      expect((await h.run(["vm", "health", "f1"])).code).toBe(0);
    },
    T,
  );

  testNeeds(
    "suspend leaves no VMM and a snapshot in the VM directory; resume loads it (and is timed)",
    needs,
    async () => {
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        const s = await h.run(["vm", "suspend", "f1"]);
        expect(s.code).toBe(0);
        expect((await show()).state).toBe("suspended");
        expect(fcAlive()).toEqual([]);
        expect(existsSync(join(dir, "vmstate")) && existsSync(join(dir, "ram")) && existsSync(join(dir, "vmstate.json"))).toBe(true);
        const t0 = performance.now();
        const r = await h.run(["vm", "resume", "f1"]);
        times.push(performance.now() - t0);
        expect(r.code).toBe(0);
        expect((await show()).state).toBe("running");
        expect((await h.run(["vm", "health", "f1"])).code).toBe(0);
      }
      expect(readFileSync(join(dir, "console.log"), "utf8")).toContain("restored from snapshot");
      times.sort((a, b) => a - b);
      console.log(
        `fake firecracker: vm resume from suspend, CLI end to end, p50 ${Math.round(times[2]!)} ms (min ${Math.round(times[0]!)}, max ${Math.round(times[4]!)})`,
      );
    },
    T,
  );

  testNeeds(
    "stop of a suspended VM discards the saved state; start boots it cold",
    needs,
    async () => {
      expect((await h.run(["vm", "suspend", "f1"])).code).toBe(0);
      expect((await h.run(["vm", "stop", "f1"])).stdout).toContain("saved state discarded");
      expect((await show()).state).toBe("stopped");
      for (const f of ["vmstate", "vmstate.json", "ram"]) expect(existsSync(join(dir, f))).toBe(false);
      expect((await h.run(["vm", "start", "f1"])).code).toBe(0);
      expect((await show()).state).toBe("running");
    },
    T,
  );

  testNeeds(
    "snapshots: --memory and disk-only are taken, listed, restored and deleted",
    needs,
    async () => {
      expect((await h.run(["vm", "snapshot", "create", "f1", "m1", "--memory"])).code).toBe(0);
      expect((await show()).state).toBe("running");
      expect((await h.run(["vm", "snapshot", "create", "f1", "d1"])).code).toBe(0);
      const taken = await h.run(["vm", "snapshot", "create", "f1", "d1"]);
      expect(taken.code).not.toBe(0);
      expect(taken.stderr).toContain('already has a snapshot "d1"');
      const list = JSON.parse((await h.run(["vm", "snapshot", "list", "f1", "--json"])).stdout) as Array<{ name: string; memory: boolean }>;
      expect(list.map((x) => [x.name, x.memory])).toEqual([
        ["m1", true],
        ["d1", false],
      ]);
      const r = await h.run(["vm", "snapshot", "restore", "f1", "m1"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("resumed from saved state");
      expect((await show()).state).toBe("running");
      expect((await h.run(["vm", "health", "f1"])).code).toBe(0);
      const d = await h.run(["vm", "snapshot", "restore", "f1", "d1"]);
      expect(d.code).toBe(0);
      expect(d.stdout).toContain("restored d1 (disks)");
      expect((await show()).state).toBe("running");
      for (const n of ["m1", "d1"]) expect((await h.run(["vm", "snapshot", "delete", "f1", n])).code).toBe(0);
      expect(JSON.parse((await h.run(["vm", "snapshot", "list", "f1", "--json"])).stdout)).toEqual([]);
    },
    T,
  );

  testNeeds(
    "fork --count 2: each copy loads the snapshot against its own disks, TAP and vsock, takes its own identity, and the source runs on",
    needs,
    async () => {
      const r = await h.run(["vm", "fork", "f1", "--count", "2", "--json"]);
      expect(r.code).toBe(0);
      // Progress events come first, one a line; the result is the indented JSON after them.
      const copies = (JSON.parse(r.stdout.slice(r.stdout.indexOf("{\n"))) as { copies: Array<{ name: string; ip: string; dir: string }> }).copies;
      expect(copies.map((c) => c.name)).toEqual(["f1-f1", "f1-f2"]);
      const source = JSON.parse((await h.run(["vm", "show", "f1", "--json"])).stdout) as { ip: string; state: string };
      expect(source.state).toBe("running");
      expect(new Set([source.ip, ...copies.map((c) => c.ip)]).size).toBe(3);
      for (const c of copies) {
        const health = await h.run(["vm", "health", c.name, "--json"]);
        expect(health.code).toBe(0);
        // The pretend guest's hostname is what the copy's re-identify wrote.
        expect(JSON.parse(health.stdout).hostname).toBe(c.name);
        const config = (await (await fetch("http://localhost/vm/config", { unix: join(c.dir, "fc.sock") } as RequestInit)).json()) as {
          drives: Array<{ path_on_host: string }>;
        };
        // Paths in the VM directory are relative to it (Firecracker's working directory); the image stays absolute.
        expect(config.drives.map((d) => d.path_on_host).slice(1)).toEqual(["overlay.ext4", "work.ext4", "config.ext4"]);
      }
      expect((await h.run(["vm", "health", "f1"])).code).toBe(0);
      for (const c of copies) expect((await h.run(["vm", "delete", "--force", c.name])).code).toBe(0);
    },
    T,
  );
});
