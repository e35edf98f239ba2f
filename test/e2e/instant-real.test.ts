/**
 * Pause, resume, suspend and snapshots on ONE real guest under QEMU (TCG), through the CLI.
 * The checks run in order on the same VM, so the file boots a single guest (warm start restores
 * a copy of the golden kept after that boot, so it boots none).
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
const T = 900_000;

beforeAll(async () => {
  if (needs.some(([ok]) => !ok)) return;
  h = await realHome({ taps: 6, config: `boot_timeout = "300s"\nwarm_cache = 1\n` });
}, 900_000);

afterAll(async () => {
  if (!h) return;
  await h.run(["vm", "delete", "--force", "i1", "i1-f1", "i1-f2", "i1-f3", "w1"]);
  await h.run(["cache", "prune", "--all"]);
  await h.teardownNet();
  await h.cleanup();
});

const ssh = async (script: string) => {
  const r = await h.run(["vm", "ssh", "i1", "--", "sh", "-c", script]);
  if (r.code !== 0) throw new Error(`ssh ${script}: exit ${r.code}: ${r.stderr}${r.stdout}`);
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
  testNeeds(
    "setup: a VM with a counter loop, a long sleep, a file in /dev/shm and one in /root",
    needs,
    async () => {
      const r = await h.run(["vm", "create", "--name", "i1", "--json"]);
      expect({ code: r.code, stderr: r.stderr.slice(-2000) }).toMatchObject({ code: 0 });
      dir = JSON.parse(r.stdout.trim().split("\n").at(-1)!).dir;
      await ssh(
        "nohup sh -c 'n=0; while true; do n=$((n+1)); echo $n > /root/counter; sleep 1; done' >/dev/null 2>&1 & nohup sleep 100000 >/dev/null 2>&1 & echo $! > /root/sleep.pid; echo shm > /dev/shm/keep; echo root > /root/keep; sync",
      );
      expect(existsSync(join(dir, "ram"))).toBe(true);
    },
    T,
  );

  testNeeds(
    "pause: the counter stops while paused, goes on after resume, and ssh answers",
    needs,
    async () => {
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
    },
    T,
  );

  testNeeds(
    "suspend: no QEMU while suspended; resume keeps the sleep's PID, /dev/shm and /root",
    needs,
    async () => {
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
    },
    T,
  );

  testNeeds(
    "a saved state from another QEMU version is refused with a message; vm start resumes the right one",
    needs,
    async () => {
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
    },
    T,
  );

  testNeeds(
    "snapshot --memory: write A, snapshot, write B, restore: A is there, B is not, the sleep runs on",
    needs,
    async () => {
      const pid = await ssh("cat /root/sleep.pid");
      await ssh("echo A > /root/a; echo A > /etc/banger-a; rm -f /root/b /etc/banger-b; sync");
      const s = await timed(["vm", "snapshot", "create", "i1", "m1", "--memory"]);
      expect(s.code).toBe(0);
      expect(await state()).toBe("running");
      await ssh("echo B > /root/b; echo B > /etc/banger-b; sync");
      const r = await timed(["vm", "snapshot", "restore", "i1", "m1"]);
      expect(r.code).toBe(0);
      expect(await state()).toBe("running");
      expect(await ssh("cat /root/a /etc/banger-a; ls /root/b /etc/banger-b 2>&1 | grep -c 'No such file'")).toBe("A\nA\n2");
      expect(await ssh(`kill -0 ${pid} && echo alive`)).toBe("alive");
      const list = JSON.parse((await h.run(["vm", "snapshot", "list", "i1", "--json"])).stdout) as Array<{ name: string; memory: boolean; size_bytes: number }>;
      expect(list.map((x) => [x.name, x.memory])).toEqual([["m1", true]]);
      console.log(`snapshot --memory ${s.ms} ms (${Math.round(list[0]!.size_bytes / 1024 / 1024)} MiB on disk), restore ${r.ms} ms (CLI end to end)`);
    },
    T,
  );

  testNeeds(
    "fork --count 3: four VMs answer ssh, each with its own IP, MAC, hostname, machine-id, host key and RNG; the process lives in each",
    needs,
    async () => {
      const pid = await ssh("cat /root/sleep.pid");
      const f = await timed(["vm", "fork", "i1", "--count", "3", "--json"]);
      expect({ code: f.code, stderr: f.stderr.slice(-2000) }).toMatchObject({ code: 0 });
      const names = ["i1", "i1-f1", "i1-f2", "i1-f3"];
      const ident = await Promise.all(
        names.map(async (n) => {
          const r = await h.run([
            "vm",
            "ssh",
            n,
            "--",
            "sh",
            "-c",
            `hostname; cat /sys/class/net/eth0/address; ip -4 -o addr show eth0 | awk '{print $4}'; cat /etc/machine-id; cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub; head -c32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; kill -0 ${pid} && echo alive`,
          ]);
          expect({ vm: n, code: r.code, stderr: r.stderr }).toMatchObject({ code: 0 });
          return r.stdout.trim().split("\n");
        }),
      );
      expect(ident.map((i) => i[0])).toEqual(names);
      for (let field = 0; field < 6; field++) expect(new Set(ident.map((i) => i[field])).size).toBe(4);
      expect(ident.every((i) => i[6] === "alive")).toBe(true);
      const shown = await Promise.all(names.map(async (n) => JSON.parse((await h.run(["vm", "show", n, "--json"])).stdout) as { ip: string; mac: string }));
      expect(ident.map((i) => i[1])).toEqual(shown.map((v) => v.mac));
      expect(ident.map((i) => i[2])).toEqual(shown.map((v) => `${v.ip}/24`));
      expect(await ssh("cat /root/keep")).toBe("root");
      console.log(`fork --count 3: ${f.ms} ms to three copies ready`);
      expect((await h.run(["vm", "delete", "--force", "i1-f1", "i1-f2", "i1-f3"])).code).toBe(0);
    },
    T,
  );

  testNeeds(
    "warm start: the golden kept after i1's create is restored as w1 with a larger disk grown online, its own identity and none of i1's later files; prune --all removes it",
    needs,
    async () => {
      const goldens = JSON.parse((await h.run(["cache", "list", "--json"])).stdout) as Array<{ image: string; diskBytes: number }>;
      expect(goldens.length).toBe(1);
      // A larger disk than the golden's: restored warm all the same, the disk grown online.
      const disk = goldens[0]!.diskBytes + 2 ** 30;
      const w = await timed(["vm", "create", "--name", "w1", "--disk", String(disk), "--json"]);
      expect({ code: w.code, stderr: w.stderr.slice(-2000) }).toMatchObject({ code: 0 });
      expect(w.stdout).toContain("warm copy");
      expect(w.stdout).toContain("grow disk");
      const df = await h.run([
        "vm",
        "ssh",
        "w1",
        "--",
        "sh",
        "-c",
        "df -B1 --output=size /root | tail -1; test -s /root/.ssh/authorized_keys && echo seed-present",
      ]);
      expect({ code: df.code, stderr: df.stderr }).toMatchObject({ code: 0 });
      const [fsBytes, seed] = df.stdout.trim().split("\n");
      // ext4 keeps some of the device for itself, but far less than the GiB added.
      expect(Number(fsBytes)).toBeGreaterThan(goldens[0]!.diskBytes + 2 ** 29);
      expect(Number(fsBytes)).toBeLessThanOrEqual(disk);
      expect(seed).toBe("seed-present");
      const r = await h.run([
        "vm",
        "ssh",
        "w1",
        "--",
        "sh",
        "-c",
        "hostname; cat /etc/machine-id; ip -4 -o addr show eth0 | awk '{print $4}'; test -e /root/keep && echo keep-present || echo keep-absent",
      ]);
      expect({ code: r.code, stderr: r.stderr }).toMatchObject({ code: 0 });
      const [host, machineId, addr, keep] = r.stdout.trim().split("\n");
      const shown = JSON.parse((await h.run(["vm", "show", "w1", "--json"])).stdout) as { ip: string };
      expect([host, addr, keep]).toEqual(["w1", `${shown.ip}/24`, "keep-absent"]);
      expect(machineId).not.toBe(await ssh("cat /etc/machine-id"));
      console.log(`warm create ${w.ms} ms (CLI end to end, ready for ssh)`);
      expect((await h.run(["vm", "delete", "--force", "w1"])).code).toBe(0);
      const pruned = await h.run(["cache", "prune", "--all"]);
      expect(pruned.stdout).toContain("removed");
      expect(JSON.parse((await h.run(["cache", "list", "--json"])).stdout)).toEqual([]);
    },
    T,
  );

  testNeeds(
    "disk-only snapshot: write A, snapshot, write B, restore (the VM boots again): A is there, B is not; delete frees it",
    needs,
    async () => {
      await ssh("echo A2 > /root/a; rm -f /root/b; sync");
      const s = await timed(["vm", "snapshot", "create", "i1", "d1"]);
      expect(s.code).toBe(0);
      await ssh("echo B2 > /root/b; echo A3 > /root/a; sync");
      const r = await timed(["vm", "snapshot", "restore", "i1", "d1"]);
      expect(r.code).toBe(0);
      expect(await ssh("cat /root/a; test -e /root/b && echo B-present || echo B-absent")).toBe("A2\nB-absent");
      expect((await h.run(["vm", "snapshot", "delete", "i1", "d1"])).code).toBe(0);
      expect((await h.run(["vm", "snapshot", "delete", "i1", "m1"])).code).toBe(0);
      expect(existsSync(join(dir, "snapshots", "d1")) || existsSync(join(dir, "snapshots", "m1"))).toBe(false);
      const missing = await h.run(["vm", "snapshot", "restore", "i1", "d1"]);
      expect(missing.code).not.toBe(0);
      expect(missing.stderr).toContain('no snapshot "d1"');
      console.log(`disk snapshot ${s.ms} ms, restore with a cold boot ${r.ms} ms`);
    },
    T,
  );
});
