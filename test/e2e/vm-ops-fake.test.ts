import { afterAll, beforeAll, describe, expect } from "bun:test";
import { openStoreReadOnly } from "../../src/store/db.ts";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { bangerBin, type TestHome } from "../../src/testing/cli.ts";
import { fakeFirecrackerHome } from "../../src/testing/fake-env.ts";
import { hasBin, isRoot, testNeeds } from "../../src/testing/skip.ts";

const needs: Array<[boolean, string]> = [
  [existsSync(bangerBin), "dist/banger not built"],
  [isRoot, "needs root (bridge and TAPs)"],
  [hasBin("nft") || hasBin("iptables"), "needs nftables or iptables"],
  [hasBin("dig"), "needs dig (dnsutils)"],
];
let h: TestHome & { teardownNet(): Promise<void> };
const T = 180_000;

beforeAll(async () => {
  if (needs.every(([ok]) => ok)) h = await fakeFirecrackerHome({ taps: 24 });
});
afterAll(async () => {
  if (!h) return;
  const names = (JSON.parse((await h.run(["vm", "list", "--json"])).stdout || "[]") as Array<{ name: string }>).map((v) => v.name);
  if (names.length) await h.run(["vm", "delete", "--force", ...names]);
  await h.teardownNet();
  await h.cleanup();
});

const json = async (args: string[]) => {
  const r = await h.run([...args, "--json"]);
  if (r.code !== 0) throw new Error(`${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(args[1] === "create" ? r.stdout.trim().split("\n").at(-1)! : r.stdout);
};
const rows = () => {
  const db = openStoreReadOnly(h.paths.dbFile)!;
  const r = db.query<{ name: string }, []>("SELECT name FROM vms").all();
  db.close();
  return r;
};
const dig = async (name: string) => {
  const [host, port] = (await json(["daemon", "status"])).dns.split(":");
  return Bun.spawnSync(["dig", `@${host}`, "-p", port, "+tries=1", "+time=2", name, "A"]).stdout.toString();
};

describe("VM operations against the fake Firecracker", () => {
  testNeeds(
    "vm set: cpus/memory on next start (said so), disk grows but never shrinks, nat toggles at once",
    needs,
    async () => {
      const vm = await json(["vm", "create", "--name", "s1", "--disk", "2G"]);
      const set = await h.run(["vm", "set", "s1", "--cpus", "3", "--memory", "512"]);
      expect(set.stdout).toContain("s1: cpus 3, memory 512 MiB (applied on next start)");
      expect(await json(["vm", "show", "s1"])).toMatchObject({ cpus: 3, memory_mib: 512 });
      const shrink = await h.run(["vm", "set", "s1", "--disk", "1G"]);
      expect(shrink.code).toBe(1);
      expect(shrink.stderr).toContain("never shrink");
      expect((await h.run(["vm", "set", "s1", "--nat"])).stdout).toContain("net nat");
      expect(JSON.parse((await h.run(["host", "status", "--json"])).stdout).nat).toEqual([{ guestIp: vm.ip, tap: vm.tap }]);
      expect((await h.run(["vm", "set", "s1", "--no-nat"])).stdout).toContain("net none");
      expect(JSON.parse((await h.run(["host", "status", "--json"])).stdout).nat).toEqual([]);
      await h.run(["vm", "stop", "s1"]);
      const grow = await h.run(["vm", "set", "s1", "--disk", "3G"]);
      expect(grow.code).toBe(0);
      const size = Bun.spawnSync(["stat", "-c", "%s", `${vm.dir}/work.ext4`])
        .stdout.toString()
        .trim();
      expect(Number(size)).toBe(3 * 1024 ** 3);
      expect((await h.run(["vm", "start", "s1"])).code).toBe(0);
      const cmdline = readFileSync(`${vm.dir}/console.log`, "utf8");
      expect(cmdline).toContain("Allowing 3 CPUs, Memory: 512MiB");
    },
    T,
  );

  testNeeds(
    "vm stats, vm logs, vm health and vm ports work over the fake's hybrid vsock",
    needs,
    async () => {
      const stats = await json(["vm", "stats", "s1"]);
      expect(stats[0]).toMatchObject({ name: "s1", state: "running" });
      expect(stats[0].rss_bytes).toBeGreaterThan(0);
      const logs = await h.run(["vm", "logs", "s1"]);
      expect(logs.stdout).toContain("Running Firecracker v1.16.1");
      const health = await json(["vm", "health", "s1"]);
      expect(health.boot_id).toBeTruthy();
      const ports = await json(["vm", "ports", "s1"]);
      expect(ports.vm).toBe("s1");
      expect(Array.isArray(ports.ports)).toBe(true);
    },
    T,
  );

  testNeeds(
    "DNS: a real query answers the running VM's A record, and NXDOMAIN after it is deleted",
    needs,
    async () => {
      const vm = await json(["vm", "show", "s1"]);
      const answer = await dig("s1.vm");
      expect(answer).toContain("status: NOERROR");
      expect(answer).toMatch(new RegExp(`s1\\.vm\\.\\s+\\d+\\s+IN\\s+A\\s+${vm.ip.replaceAll(".", "\\.")}`));
      expect(await dig("example.com")).toContain("status: REFUSED");
      await h.run(["vm", "delete", "--force", "s1"]);
      expect(await dig("s1.vm")).toContain("status: NXDOMAIN");
    },
    T,
  );

  testNeeds(
    "Ctrl-C during a piped create cancels it and leaves nothing behind",
    needs,
    async () => {
      // A daemon that holds creates before "wait agent" (the pause seam), so the Ctrl-C lands
      // mid-create however fast a create is; it is stopped again at the end.
      await h.run(["daemon", "stop"]);
      const env = { ...h.env, BANGER_PAUSE_AT_STEP: "wait agent" };
      const proc = Bun.spawn([bangerBin, "vm", "create", "--name", "cancelme", "--nat"], { env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
      const reader = proc.stderr.getReader();
      let seen = "";
      while (!seen.includes("✓ boot")) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += new TextDecoder().decode(value);
      }
      proc.kill("SIGINT");
      const code = await proc.exited;
      expect(code).not.toBe(0);
      for (let i = 0; i < 50 && rows().length; i++) await Bun.sleep(100);
      expect(rows()).toEqual([]);
      expect(readdirSync(h.paths.vmsDir)).toEqual([]);
      expect(JSON.parse((await h.run(["host", "status", "--json"])).stdout).nat).toEqual([]);
      expect(readFileSync(h.paths.daemonLog, "utf8")).toContain("cancelled by the user");
      await h.run(["daemon", "stop"]);
    },
    T,
  );

  testNeeds(
    "vm create pulls a missing image from the catalog (sha256 checked); image pull refuses a tampered archive",
    needs,
    async () => {
      const work = `${h.root}/catalog`;
      Bun.spawnSync(["mkdir", "-p", work]);
      const img = `${h.paths.imagesDir}/bookworm`;
      Bun.spawnSync(["cp", "--sparse=always", `${img}/rootfs.ext4`, `${img}/work-seed.ext4`, work]);
      await Bun.write(`${work}/image.json`, JSON.stringify({ agent_version: "test", kernel: "default" }));
      Bun.spawnSync(["tar", "-C", work, "-cf", `${work}/image.tar`, "rootfs.ext4", "work-seed.ext4", "image.json"]);
      const sha = new Bun.CryptoHasher("sha256").update(await Bun.file(`${work}/image.tar`).arrayBuffer()).digest("hex");
      const server: Bun.Server<undefined> = Bun.serve({
        port: 0,
        hostname: "127.0.0.1",
        fetch: (req): Response => {
          const path = new URL(req.url).pathname;
          const url = `http://127.0.0.1:${server.port}/image.tar`;
          if (path === "/images.json")
            return Response.json([
              { name: "pulled", url, sha256: sha },
              { name: "tampered", url, sha256: "f".repeat(64) },
            ]);
          return path === "/image.tar" ? new Response(Bun.file(`${work}/image.tar`)) : new Response("", { status: 404 });
        },
      });
      try {
        await Bun.write(h.paths.configFile, `${await Bun.file(h.paths.configFile).text()}image_catalog = "http://127.0.0.1:${server.port}/images.json"\n`);
        await h.run(["daemon", "stop"]);
        const r = await h.run(["vm", "create", "--name", "pl", "--image", "pulled"]);
        expect(r.code).toBe(0);
        expect((await json(["image", "show", "pulled"])).source).toContain("catalog:");
        const bad = await h.run(["image", "pull", "tampered"]);
        expect(bad.code).toBe(1);
        expect(bad.stderr).toMatch(/sha256/i);
        expect(existsSync(`${h.paths.imagesDir}/tampered`)).toBe(false);
        expect(readdirSync(h.paths.imagesDir).filter((n) => n.startsWith("."))).toEqual([]);
        const del = await h.run(["image", "delete", "pulled"]);
        expect(del.code).toBe(1);
        expect(del.stderr).toContain("used by pl");
        await h.run(["vm", "delete", "--force", "pl"]);
        expect((await h.run(["image", "delete", "pulled"])).code).toBe(0);
      } finally {
        server.stop(true);
      }
    },
    T,
  );

  testNeeds(
    "20 VMs created and deleted in parallel, three rounds: no IP, MAC, CID or TAP twice, none leaked",
    needs,
    async () => {
      for (let round = 0; round < 3; round++) {
        const names = Array.from({ length: 20 }, (_, i) => `p${round}-${i}`);
        const created = await Promise.all(names.map((n) => h.run(["vm", "create", "--name", n])));
        for (const r of created) if (r.code !== 0) throw new Error(`create failed: ${r.stderr}`);
        const vms = (await json(["vm", "list"])) as Array<{ ip: string; mac: string; cid: number; tap: string; state: string }>;
        expect(vms).toHaveLength(20);
        for (const key of ["ip", "mac", "cid", "tap"] as const) expect(new Set(vms.map((v) => v[key])).size).toBe(20);
        expect(vms.every((v) => v.state === "running")).toBe(true);
        const deleted = await Promise.all(names.map((n) => h.run(["vm", "delete", "--force", n])));
        for (const r of deleted) if (r.code !== 0) throw new Error(`delete failed: ${r.stderr}`);
        expect(rows()).toEqual([]);
        expect(readdirSync(h.paths.vmsDir)).toEqual([]);
      }
    },
    600_000,
  );
});
