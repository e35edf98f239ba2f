import { afterAll, beforeAll, describe, expect } from "bun:test";
import { openStoreReadOnly } from "../../src/store/db.ts";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { bangerBin, type TestHome } from "../../src/testing/cli.ts";
import { fakeFirecrackerHome } from "../../src/testing/fake-env.ts";
import { hasBin, isRoot, testNeeds } from "../../src/testing/skip.ts";
import { isAlive } from "../../src/vm/drivers/process.ts";

const needs: Array<[boolean, string]> = [
  [existsSync(bangerBin), "dist/banger not built"],
  [isRoot, "needs root (bridge and TAPs)"],
  [hasBin("nft") || hasBin("iptables"), "needs nftables or iptables"],
];
let h: TestHome & { teardownNet(): Promise<void> };

beforeAll(async () => {
  if (needs.every(([ok]) => ok)) h = await fakeFirecrackerHome({ taps: 12 });
});
afterAll(async () => {
  if (!h) return;
  await h.run([
    "vm",
    "delete",
    "--force",
    ...(JSON.parse((await h.run(["vm", "list", "--json"])).stdout || "[]") as Array<{ name: string }>).map((v) => v.name),
  ]);
  await h.teardownNet();
  await h.cleanup();
});

const json = async (args: string[]) => {
  const r = await h.run([...args, "--json"]);
  if (r.code !== 0) throw new Error(`${args.join(" ")}: ${r.stderr}`);
  const lines = r.stdout.trim().split("\n");
  return args[1] === "create" ? JSON.parse(lines.at(-1)!) : JSON.parse(r.stdout);
};
const rows = () => {
  const db = openStoreReadOnly(h.paths.dbFile)!;
  const r = db.query<{ id: string; name: string; state: string; tap: string }, []>("SELECT id, name, state, tap FROM vms").all();
  db.close();
  return r;
};
const vmDirs = () => (existsSync(h.paths.vmsDir) ? readdirSync(h.paths.vmsDir) : []);
const nat = async () => (await h.run(["host", "status", "--json"]).then((r) => JSON.parse(r.stdout))).nat as unknown[];

describe("VM lifecycle against the fake Firecracker", () => {
  testNeeds("create → running; stop → stopped; restart; kill; delete removes row, dir, handles and TAP allocation", needs, async () => {
    const vm = await json(["vm", "create", "--name", "life"]);
    expect(vm.state).toBe("running");
    expect(isAlive(vm.pid)).toBe(true);
    expect(existsSync(join(vm.dir, "handles.json"))).toBe(true);
    expect((await h.run(["vm", "stop", "life"])).stdout).toContain("life: stopped (graceful)");
    expect(isAlive(vm.pid)).toBe(false);
    expect((await json(["vm", "show", "life"])).state).toBe("stopped");
    expect(existsSync(join(vm.dir, "handles.json"))).toBe(false);
    const restart = await h.run(["vm", "restart", "life"]);
    expect(restart.code).toBe(0);
    const running = await json(["vm", "show", "life"]);
    expect(running.state).toBe("running");
    expect((await h.run(["vm", "kill", "life"])).code).toBe(0);
    expect(isAlive(running.pid)).toBe(false);
    expect((await json(["vm", "show", "life"])).state).toBe("stopped");
    expect((await h.run(["vm", "start", "life"])).code).toBe(0);
    const refused = await h.run(["vm", "delete", "life"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("--force");
    expect((await h.run(["vm", "delete", "--force", "life"])).code).toBe(0);
    expect(rows()).toEqual([]);
    expect(existsSync(vm.dir)).toBe(false);
    expect(readFileSync(h.paths.knownHosts, "utf8")).not.toContain("life.vm");
  });

  for (const step of ["resolve image", "allocate", "rootfs", "work disk", "network", "boot", "wait agent", "wait ssh", "ready"]) {
    testNeeds(`a create that fails at "${step}" leaves no row, file, process or NAT rule`, needs, async () => {
      await h.run(["daemon", "stop"]);
      const r = await h.run(["vm", "create", "--name", "doomed", "--nat"], { env: { BANGER_FAIL_AT_STEP: step } });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`injected failure at ${step}`);
      await h.run(["daemon", "stop"]);
      expect(rows()).toEqual([]);
      expect(vmDirs()).toEqual([]);
      expect(await nat()).toEqual([]);
      const procs = Bun.spawnSync(["pgrep", "-f", `fake-firecracker.ts.*${h.paths.vmsDir}`])
        .stdout.toString()
        .trim();
      expect(procs).toBe("");
    });
  }

  testNeeds("validation rejects bad input before anything is persisted, at the CLI and at the RPC layer", needs, async () => {
    await json(["vm", "create", "--name", "taken"]);
    for (const [args, msg] of [
      [["--cpus", "0"], "cpus: must be at least 1"],
      [["--memory", "64"], "memory: must be at least 128 MiB"],
      [["--name", "Bad_Name"], "name: must be 1-32 lowercase"],
      [["--disk", "10M"], "disk: must be at least 1G"],
    ] as const) {
      const r = await h.run(["vm", "create", ...args]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(msg);
    }
    const dup = await h.run(["vm", "create", "--name", "taken"]);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toContain('a VM named "taken" already exists');
    const direct = await fetch("http://banger/rpc", {
      method: "POST",
      unix: h.paths.socket,
      body: JSON.stringify({ method: "vm.create", params: { cpus: 0, memory: 64, name: "Bad_" } }),
    } as RequestInit).then((r) => r.json() as Promise<{ error: { code: string; message: string } }>);
    expect(direct.error.code).toBe("invalid_argument");
    expect(direct.error.message).toContain("cpus");
    expect(rows().map((r) => r.name)).toEqual(["taken"]);
    await h.run(["vm", "delete", "--force", "taken"]);
  });

  testNeeds("vm stop a b a nosuch c: each once, nosuch reported with candidates, first-seen order, exit 1", needs, async () => {
    for (const n of ["a", "b", "c"]) await json(["vm", "create", "--name", n]);
    const r = await h.run(["vm", "stop", "a", "b", "a", "nosuch", "c"]);
    expect(r.code).toBe(1);
    expect(r.stdout.trim().split("\n")).toEqual(["a: stopped (graceful)", "b: stopped (graceful)", "c: stopped (graceful)"]);
    expect(r.stderr).toContain('nosuch: no VM "nosuch"; VMs: a, b, c');
    const lines = (r.stdout + r.stderr).split("\n");
    void lines;
    await h.run(["vm", "delete", "a", "b", "c"]);
  });

  testNeeds("two creates and a delete of three VMs overlap; two ops on one VM serialize", needs, async () => {
    await json(["vm", "create", "--name", "z"]);
    const timed = async (args: string[]) => {
      const start = performance.now();
      const r = await h.run(args);
      return { r, start, end: performance.now() };
    };
    const [x, y, z] = await Promise.all([
      timed(["vm", "create", "--name", "x"]),
      timed(["vm", "create", "--name", "y"]),
      timed(["vm", "delete", "--force", "z"]),
    ]);
    for (const t of [x, y, z]) expect(t.r.code).toBe(0);
    const overlap = Math.min(x.end, y.end, z.end) - Math.max(x.start, y.start, z.start);
    console.log(
      `parallel ops overlap: ${Math.round(overlap)} ms (create x ${Math.round(x.end - x.start)} ms, create y ${Math.round(y.end - y.start)} ms, delete z ${Math.round(z.end - z.start)} ms)`,
    );
    expect(overlap).toBeGreaterThan(0);
    const logBefore = readFileSync(h.paths.daemonLog, "utf8").length;
    const [s1, s2] = await Promise.all([h.run(["vm", "restart", "x"]), h.run(["vm", "stop", "x"])]);
    expect(s1.code + s2.code).toBe(0);
    const log = readFileSync(h.paths.daemonLog, "utf8")
      .slice(logBefore)
      .split("\n")
      .filter((l) => / lock x (acquired|released)/.test(l));
    expect(log.map((l) => l.split(" lock x ")[1])).toEqual(["acquired", "released", "acquired", "released"]);
    await h.run(["vm", "delete", "--force", "x", "y"]);
  });

  testNeeds("kill -9 of the daemon with 3 VMs running: a new daemon lists them running and stops each", needs, async () => {
    for (const n of ["k1", "k2", "k3"]) await json(["vm", "create", "--name", n]);
    const pid = h.daemonPid()!;
    process.kill(pid, "SIGKILL");
    while (isAlive(pid)) await Bun.sleep(10);
    const list = await json(["vm", "list"]);
    expect(h.daemonPid()).not.toBe(pid);
    expect(list.map((v: { name: string; state: string }) => `${v.name}:${v.state}`)).toEqual(["k1:running", "k2:running", "k3:running"]);
    for (const v of list) expect(isAlive(v.pid)).toBe(true);
    const stop = await h.run(["vm", "stop", "k1", "k2", "k3"]);
    expect(stop.code).toBe(0);
    for (const v of list) expect(isAlive(v.pid)).toBe(false);
    await h.run(["vm", "delete", "k1", "k2", "k3"]);
  });

  testNeeds("a VMM killed behind the daemon's back: within one poll interval the VM is stopped and its NAT released", needs, async () => {
    const vm = await json(["vm", "create", "--name", "victim", "--nat"]);
    expect((await nat()).length).toBe(1);
    process.kill(vm.pid, "SIGKILL");
    await Bun.sleep(1200); // poll interval is 500ms in this home
    const now = await json(["vm", "show", "victim"]);
    expect(now.state).toBe("stopped");
    expect(now.last_error).toContain("exited unexpectedly");
    expect(await nat()).toEqual([]);
    await h.run(["vm", "delete", "victim"]);
  });

  testNeeds("a corrupt handles.json: stop and delete still tear everything down", needs, async () => {
    const vm = await json(["vm", "create", "--name", "corrupt", "--nat"]);
    await h.run(["daemon", "stop"]); // the daemon forgets its in-memory handles
    writeFileSync(join(vm.dir, "handles.json"), "{ not json");
    const stop = await h.run(["vm", "stop", "corrupt"]);
    expect(stop.code).toBe(0);
    expect(isAlive(vm.pid)).toBe(false);
    expect(await nat()).toEqual([]);
    expect((await h.run(["vm", "delete", "corrupt"])).code).toBe(0);
    expect(rows()).toEqual([]);
    expect(vmDirs()).toEqual([]);
  });
});
