import { afterAll, beforeAll, describe, expect } from "bun:test";
import dgram from "node:dgram";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, statfsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bangerBin, daemonPids, TestHome } from "../../src/testing/cli.ts";
import { crashAt, killDaemon, storeRows, vmDirs, vmmProcs } from "../../src/testing/crash.ts";
import { fakeFirecrackerHome } from "../../src/testing/fake-env.ts";
import { hasBin, isRoot, testNeeds } from "../../src/testing/skip.ts";
import { isAlive } from "../../src/vm/drivers/process.ts";

type NetHome = TestHome & { teardownNet(): Promise<void> };

const needs: Array<[boolean, string]> = [
  [existsSync(bangerBin), "dist/banger not built"],
  [isRoot, "needs root (bridge, TAPs, tmpfs mount)"],
  [hasBin("nft") || hasBin("iptables"), "needs nftables or iptables"],
];
const CREATE_STEPS = ["resolve image", "allocate", "rootfs", "work disk", "network", "boot", "wait agent", "wait ssh", "ready"];

const rows = storeRows;
const nat = async (h: TestHome) => JSON.parse((await h.run(["host", "status", "--json"])).stdout).nat as unknown[];
const createJson = async (h: TestHome, args: string[]) => {
  const r = await h.run(["vm", "create", ...args, "--json"]);
  if (r.code !== 0) throw new Error(`vm create: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!);
};

/** Nothing of any VM is left: no row, no file under vms/, no VMM or agent process, no NAT entry. */
async function expectNothingLeft(h: TestHome) {
  expect(rows(h)).toEqual([]);
  expect(vmDirs(h)).toEqual([]);
  expect(vmmProcs(h)).toBe("");
  expect(await nat(h)).toEqual([]);
}

describe("daemon and VMM crashes", () => {
  let h: NetHome;
  beforeAll(async () => {
    if (needs.every(([ok]) => ok)) h = await fakeFirecrackerHome({ taps: 4 });
  });
  afterAll(async () => {
    if (!h) return;
    const names = rows(h).map((r) => r.name);
    if (names.length) await h.run(["vm", "delete", "--force", ...names]);
    await h.teardownNet();
    await h.cleanup();
  });

  for (const step of CREATE_STEPS) {
    testNeeds(`kill -9 of the daemon paused before "${step}": the next daemon's reconcile leaves nothing`, needs, async () => {
      const { result: r, logFrom, pid: old } = await crashAt(h, step, ["vm", "create", "--name", "crashy", "--nat"], { timeoutMs: 30_000 });
      expect(r.code).toBe(1);
      // The next call starts a fresh daemon (no pause knob) whose reconcile undoes the half-made VM.
      const list = await h.run(["vm", "list", "--json"]);
      expect(list.code).toBe(0);
      expect(h.daemonPid()).not.toBe(old);
      expect(JSON.parse(list.stdout)).toEqual([]);
      // Before "allocate" ran there is no row to undo; after it, reconcile must have removed it.
      if (CREATE_STEPS.indexOf(step) > CREATE_STEPS.indexOf("allocate"))
        expect(readFileSync(h.paths.daemonLog, "utf8").slice(logFrom)).toContain("removed crashy");
      await expectNothingLeft(h);
    });
  }

  testNeeds("kill -9 of the daemon after ready: the VM is kept running, then delete leaves nothing", needs, async () => {
    const vm = await createJson(h, ["--name", "survivor", "--nat"]);
    await killDaemon(h);
    const [after] = JSON.parse((await h.run(["vm", "list", "--json"])).stdout);
    expect(`${after.name}:${after.state}`).toBe("survivor:running");
    expect(after.pid).toBe(vm.pid);
    expect((await nat(h)).length).toBe(1);
    expect((await h.run(["vm", "delete", "--force", "survivor"])).code).toBe(0);
    expect(isAlive(vm.pid)).toBe(false);
    await expectNothingLeft(h);
  });

  testNeeds("a VMM killed under a running VM: stopped within a poll, no process, NAT or socket left; delete leaves nothing", needs, async () => {
    const vm = await createJson(h, ["--name", "victim", "--nat"]);
    expect(readdirSync(vm.dir).filter((f) => f.endsWith(".sock")).length).toBeGreaterThan(0);
    process.kill(vm.pid, "SIGKILL");
    let now = vm;
    for (let i = 0; i < 50 && now.state !== "stopped"; i++) {
      await Bun.sleep(100); // the poll interval is 500 ms in this home
      now = JSON.parse((await h.run(["vm", "show", "victim", "--json"])).stdout);
    }
    expect(now.state).toBe("stopped");
    expect(now.last_error).toContain("exited unexpectedly");
    expect(now.pid).toBeNull();
    expect(vmmProcs(h)).toBe("");
    expect(await nat(h)).toEqual([]);
    const left = readdirSync(vm.dir);
    expect(left.filter((f) => f.endsWith(".sock") || f === "handles.json")).toEqual([]);
    // What survives a stop is the VM's data, so it can start again.
    expect(left).toContain("work.ext4");
    expect((await h.run(["vm", "delete", "victim"])).code).toBe(0);
    await expectNothingLeft(h);
  });
});

describe("disk full during create", () => {
  let h: NetHome | undefined;
  let mnt = "";
  const filler = () => join(mnt, "filler");
  beforeAll(async () => {
    if (!needs.every(([ok]) => ok)) return;
    mnt = mkdtempSync(join(tmpdir(), "bgfull-"));
    // A private small filesystem for the state dir; tmpfs keeps holes sparse like ext4 does.
    Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=320m,mode=0700", "tmpfs", mnt]);
    h = await fakeFirecrackerHome({ taps: 2, env: { XDG_STATE_HOME: mnt } });
  });
  afterAll(async () => {
    if (h) {
      rmSync(filler(), { force: true });
      const names = rows(h).map((r) => r.name);
      if (names.length) await h.run(["vm", "delete", "--force", ...names]);
      await h.teardownNet();
      await h.cleanup();
    }
    if (mnt) {
      Bun.spawnSync(["umount", "-l", mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });

  const free = () => {
    const s = statfsSync(mnt);
    return s.bavail * s.bsize;
  };
  /** Leaves exactly `bytes` free (rounded to pages) by sizing one filler file. */
  const leaveFree = (bytes: number) => {
    rmSync(filler(), { force: true });
    const fill = free() - bytes;
    if (fill > 0) Bun.spawnSync(["fallocate", "-l", String(fill), filler()]);
  };
  const allocated = (p: string) => statSync(p).blocks * 512;

  testNeeds("a create that runs out of space names the disk and says No space left; nothing is left behind", needs, async () => {
    // A real create first measures what each disk really takes (they are sparse), then each
    // failing create gets just less than the disk it is making needs.
    const vm = await createJson(h!, ["--name", "measure"]);
    const need = {
      overlay: allocated(join(vm.dir, "overlay.ext4")),
      work: allocated(join(vm.dir, "work.ext4")),
      config: allocated(join(vm.dir, "config.ext4")),
    };
    console.log(`allocated: overlay ${need.overlay >> 10} KiB, work disk ${need.work >> 10} KiB, config drive ${need.config >> 10} KiB`);
    expect((await h!.run(["vm", "delete", "--force", "measure"])).code).toBe(0);
    const margin = 256 << 10; // for the host key, the row and log lines
    const cases: Array<[string, string, number]> = [
      ["rootfs", "overlay disk", need.overlay / 2],
      ["work disk", "work disk", need.overlay + need.work / 2],
      ["boot", "config drive", need.overlay + need.work + need.config / 2],
    ];
    for (const [step, disk, bytes] of cases) {
      leaveFree(bytes + margin);
      const r = await h!.run(["vm", "create", "--name", "full", "--nat"]);
      rmSync(filler(), { force: true });
      console.log(`${step}: ${r.stderr.split("\n").find((l) => l.startsWith("banger: "))}`);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`no space left on device while making the ${disk} ${mnt}/banger/vms/[0-9a-f]+/`, "i"));
      expect(r.stderr).toContain(`hint: Free space on the filesystem holding ${mnt}/banger/vms (see \`df -h ${mnt}/banger/vms\`)`);
      expect(readFileSync(h!.paths.daemonLog, "utf8")).toContain(`step ${step} failed`);
      await expectNothingLeft(h!);
    }
    // With the space back, the same create works.
    await createJson(h!, ["--name", "full"]);
    expect((await h!.run(["vm", "delete", "--force", "full"])).code).toBe(0);
    await expectNothingLeft(h!);
  });
});

describe("the DNS port taken at daemon start (another user's daemon, say)", () => {
  testNeeds(
    "a dns_listen that is no address still stops the start: the CLI names it, not an older run's error",
    [[existsSync(bangerBin), "dist/banger not built"]],
    async () => {
      const h = new TestHome();
      try {
        writeFileSync(h.paths.configFile, `dns_listen = "999.1.1.1:53"\n`);
        // An older daemon's lines in the log must not be taken for this start's failure.
        mkdirSync(h.paths.stateDir, { recursive: true });
        writeFileSync(h.paths.daemonLog, "banger: some stale error from an earlier run\n");
        const r = await h.run(["vm", "list"]);
        expect(r.code).toBe(1);
        expect(r.stderr).toContain(`the daemon could not start: invalid address "999.1.1.1:53" for dns_listen`);
        expect(r.stderr).not.toContain("stale error");
        expect(daemonPids(h.paths.socket)).toEqual([]);
      } finally {
        await h.cleanup();
      }
    },
  );

  testNeeds(
    "the daemon starts without that listener; daemon status says so and doctor gives the dns_listen fix",
    [[existsSync(bangerBin), "dist/banger not built"]],
    async () => {
      const squatter = dgram.createSocket("udp4");
      await new Promise<void>((r) => squatter.bind(0, "127.0.0.1", () => r()));
      const addr = `127.0.0.1:${squatter.address().port}`;
      const h = new TestHome();
      try {
        mkdirSync(h.paths.configDir, { recursive: true });
        writeFileSync(h.paths.configFile, `dns_listen = "${addr}"\n`);
        const list = await h.run(["vm", "list"]);
        expect(list.code).toBe(0);
        const status = await h.run(["daemon", "status"]);
        expect(status.code).toBe(0);
        expect(status.stdout).toContain(`dns: not listening: DNS address ${addr} is already in use`);
        expect(status.stdout).toContain("dns_listen");
        const json = JSON.parse((await h.run(["daemon", "status", "--json"])).stdout);
        expect(json.dns).toBe("");
        expect(json.dnsProblem.message).toContain(addr);
        const doctor = JSON.parse((await h.run(["doctor", "--json"])).stdout) as {
          checks: Array<{ name: string; status: string; detail: string; fix?: string }>;
        };
        const dns = doctor.checks.find((c) => c.name === "dns port")!;
        expect(dns.status).toBe("fail");
        expect(dns.detail).toContain(addr);
        expect(dns.fix).toContain("dns_listen");
        expect(readFileSync(h.paths.daemonLog, "utf8")).toContain(".vm DNS not listening");
      } finally {
        squatter.close();
        await h.cleanup();
      }
    },
  );
});
