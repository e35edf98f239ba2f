import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, statSync } from "node:fs";
import { alive, bangerBin, daemonPids, TestHome } from "../../src/testing/cli.ts";
import { testNeeds } from "../../src/testing/skip.ts";

const homes: TestHome[] = [];
const home = (env?: Record<string, string>) => {
  const h = new TestHome(env);
  homes.push(h);
  return h;
};
afterEach(async () => {
  for (const h of homes.splice(0)) await h.cleanup();
});
const built: Array<[boolean, string]> = [[existsSync(bangerBin), "dist/banger not built (bun run build)"]];

describe("daemon lifecycle (compiled binary)", () => {
  testNeeds("version prints version and build id", built, async () => {
    const r = await home().run(["version"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^banger \d+\.\d+\.\d+\S* \(build [0-9a-f]{12}\)$/m);
  });

  testNeeds("the first daemon status starts the daemon with private socket dir and socket", built, async () => {
    const h = home();
    const r = await h.run(["daemon", "status", "--json"]);
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(alive(s.pid)).toBe(true);
    expect(statSync(h.paths.runtimeDir).mode & 0o777).toBe(0o700);
    expect(statSync(h.paths.socket).mode & 0o777).toBe(0o600);
    expect(readFileSync(h.paths.daemonLog, "utf8")).toContain("listening on");
  });

  testNeeds("10 CLIs started at the same instant produce exactly one daemon", built, async () => {
    const h = home();
    const results = await Promise.all(Array.from({ length: 10 }, () => h.run(["daemon", "status", "--json"])));
    for (const r of results) expect(r.code).toBe(0);
    const pids = new Set(results.map((r) => JSON.parse(r.stdout).pid));
    expect(pids.size).toBe(1);
    await Bun.sleep(300);
    expect(daemonPids(h.paths.socket)).toEqual([...pids]);
  });

  testNeeds("kill -9 of the daemon, then any command starts a new one", built, async () => {
    const h = home();
    const first = JSON.parse((await h.run(["daemon", "status", "--json"])).stdout);
    process.kill(first.pid, "SIGKILL");
    while (alive(first.pid)) await Bun.sleep(10);
    expect(existsSync(h.paths.socket)).toBe(true); // stale socket left behind
    const r = await h.run(["daemon", "status", "--json"]);
    expect(r.code).toBe(0);
    const second = JSON.parse(r.stdout);
    expect(second.pid).not.toBe(first.pid);
    expect(alive(second.pid)).toBe(true);
  });

  testNeeds("a daemon from another build is replaced when idle", built, async () => {
    const h = home();
    const old = JSON.parse((await h.run(["daemon", "status", "--json"], { env: { BANGER_BUILD_ID_OVERRIDE: "otherbuild00" } })).stdout);
    expect(old.buildId).toBe("otherbuild00");
    const r = await h.run(["daemon", "status", "--json"]);
    expect(r.code).toBe(0);
    const now = JSON.parse(r.stdout);
    expect(now.buildId).not.toBe("otherbuild00");
    expect(now.pid).not.toBe(old.pid);
    expect(alive(old.pid)).toBe(false);
    expect(r.stderr).toContain("replacing the idle daemon");
  });

  testNeeds("vm list's one-call path does not take an answer from a daemon of another build: it replaces the idle one", built, async () => {
    const h = home();
    const old = JSON.parse((await h.run(["daemon", "status", "--json"], { env: { BANGER_BUILD_ID_OVERRIDE: "otherbuild00" } })).stdout);
    const r = await h.run(["vm", "list"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("replacing the idle daemon from build otherbuild00");
    expect(alive(old.pid)).toBe(false);
    const show = await h.run(["vm", "show", "nope"]); // now one call to the daemon of this build
    expect(show.code).toBe(1);
    expect(show.stderr).toContain('no VM "nope"');
    expect(show.stderr).not.toContain("replacing");
  });

  testNeeds("10 CLIs racing a daemon of another build all succeed, leaving one daemon of this build", built, async () => {
    const h = home();
    await h.run(["daemon", "status"], { env: { BANGER_BUILD_ID_OVERRIDE: "otherbuild00" } });
    const results = await Promise.all(Array.from({ length: 10 }, () => h.run(["vm", "list", "--json"])));
    for (const r of results) expect(r.code).toBe(0);
    await Bun.sleep(300);
    const pids = daemonPids(h.paths.socket);
    expect(pids).toHaveLength(1);
    expect(JSON.parse((await h.run(["daemon", "status", "--json"])).stdout).buildId).not.toBe("otherbuild00");
  });

  testNeeds("daemon stop stops it and removes the socket; logs are readable", built, async () => {
    const h = home();
    const s = JSON.parse((await h.run(["daemon", "status", "--json"])).stdout);
    const stop = await h.run(["daemon", "stop"]);
    expect(stop.code).toBe(0);
    expect(alive(s.pid)).toBe(false);
    expect(existsSync(h.paths.socket)).toBe(false);
    const logs = await h.run(["daemon", "logs"]);
    expect(logs.stdout).toContain("shutting down (daemon stop)");
  });

  testNeeds("unknown commands are usage errors (exit 2) and capability errors exit 1 with a hint", built, async () => {
    const h = home();
    const bad = await h.run(["frobnicate"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("unknown command");
    const invalid = await h.run(["vm", "create", "--cpus", "0", "--memory", "64"]);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toContain("cpus: must be at least 1");
    expect(invalid.stderr).toContain("memory: must be at least 128 MiB");
    expect(existsSync(h.paths.socket)).toBe(false); // rejected before the daemon was needed
  });

  testNeeds("--help on any command or group prints its help and exits 0; an unknown word in a group exits 2", built, async () => {
    const h = home();
    for (const argv of [
      ["--help"],
      ["vm", "create", "--help"],
      ["version", "--help"],
      ["vm", "ssh", "--help"],
      ["vm", "workspace", "export", "--help"],
      ["vm", "workspace", "--help"],
      ["vm"],
      ["kernel", "--help"],
    ]) {
      const r = await h.run(argv);
      expect({ argv, code: r.code, stderr: r.stderr }).toEqual({ argv, code: 0, stderr: "" });
      expect(r.stdout).toMatch(/Usage:/);
    }
    expect((await h.run(["vm", "create", "--help"])).stdout).toContain("--cpus <n>");
    expect((await h.run(["vm", "workspace"])).stdout).toContain("vm workspace export <ref>");
    const v = await h.run(["--version"]);
    expect(v.code).toBe(0);
    expect(v.stdout).toBe((await h.run(["version"])).stdout);
    for (const [argv, said] of [
      [["vm", "frobnicate"], "banger vm frobnicate"],
      [["vm", "workspace", "frobnicate"], "banger vm workspace frobnicate"],
    ] as const) {
      const r = await h.run([...argv]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`unknown command: ${said}`);
    }
    expect(existsSync(h.paths.socket)).toBe(false);
  });
});
