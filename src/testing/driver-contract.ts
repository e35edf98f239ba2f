/**
 * The driver contract suite. The interface half (start, the agent answering, pause/resume,
 * suspend/restore, rediscovery, graceful stop, kill, cleanup) runs against every driver: the fake
 * Firecracker, a real one when present, and QEMU with a real guest. The Firecracker half (its API
 * messages, /vm/config, the raw API and snapshot rules) runs where `bin` names a Firecracker, so the
 * fake cannot drift from the thing it stands in for. Call it from a *.test.ts file.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { firecrackerFiles } from "../vm/drivers/firecracker.ts";
import { findByArgs, isAlive } from "../vm/drivers/process.ts";
import { qemuFiles, qmpArg } from "../vm/drivers/qemu.ts";
import { apiRulesContract } from "./driver-contract-api.ts";
import { firecrackerSnapshotContract, instantContract } from "./driver-contract-instant.ts";
import { inCI, missing } from "./skip.ts";
import type { BootPlan, Driver, VmmHandle, VmmKind } from "../vm/drivers/types.ts";

/** What the suite needs to know about the VMM under test. */
export interface ContractOptions {
  /** Why the suite cannot run on this machine, or null. A reason skips (never fails) the suite. */
  skip: string | null;
  /** Prerequisites checked like testNeeds: a missing one skips the suite, or fails it under CI=true. */
  needs?: Array<[boolean, string]>;
  /** Firecracker only: the VMM's argv prefix. With it the Firecracker-only tests (API rules, messages) run too. */
  bin?: string[];
  /** A kernel the VMM can boot (any readable file for the fake). */
  kernel: () => string | Promise<string>;
  /** A root drive (any writable file for the fake; a bootable rootfs for a real VMM). */
  rootfs: () => string | Promise<string>;
  /** A driver whose guest ignores the stop request (Ctrl+Alt+Del, power button); without one that test is skipped. */
  makeIgnoringDriver?: () => Driver;
  /** Whether the guest serves the agent's health call (vsock port 1024 or the virtio-serial port). */
  agent: boolean;
  /** Grace for graceful stops. */
  graceMs?: number;
  /**
   * Boot one guest and let the tests that allow it share it, in order (real guests are slow to
   * boot); the graceful stop ends it. Without it every test boots its own.
   */
  shareGuest?: boolean;
  /** Called when a guest for the running-guest tests has started, before its agent is asked (e.g. wait for a login prompt). */
  ready?: (plan: BootPlan) => Promise<void>;
  /** Guest RAM (default 128 MiB). */
  memoryMib?: number;
  /** Per-test timeout (default Bun's). */
  timeoutMs?: number;
  /** How long a running or restored guest's agent may take to answer (default 10 s). */
  answerMs?: number;
}

/** What differs between the VMMs and is not the driver's to say: where things live, and their own words. */
interface VmmFacts {
  label: string;
  controlSocket(dir: string): string;
  agent(plan: BootPlan): VmmHandle["agent"];
  /** Live VMM processes serving a VM directory. */
  serving(dir: string): number[];
  /** What a failed start says about a missing kernel / initrd. */
  badKernel: string;
  missingInitrd: string;
}

export const vmmFacts: Record<VmmKind, VmmFacts> = {
  firecracker: {
    label: "Firecracker",
    controlSocket: (dir) => firecrackerFiles(dir).apiSocket,
    agent: (plan) => ({ kind: "hybrid-vsock", path: join(plan.dir, "agent.sock"), cid: plan.cid }),
    serving: (dir) => findByArgs("--api-sock", firecrackerFiles(dir).apiSocket).filter(isAlive),
    badKernel: "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)",
    missingInitrd: "Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. No such file or directory (os error 2)",
  },
  qemu: {
    label: "QEMU",
    controlSocket: (dir) => qemuFiles(dir).qmp,
    agent: (plan) =>
      existsSync("/dev/vhost-vsock") ? { kind: "vhost-vsock", path: "", cid: plan.cid } : { kind: "virtio-serial", path: qemuFiles(plan.dir).agent },
    serving: (dir) => findByArgs("-qmp", qmpArg(dir)).filter(isAlive),
    badKernel: "could not open kernel file",
    missingInitrd: "error reading initrd",
  },
};

const AGENT_PORT = 1024;

export interface Booted {
  driver: Driver;
  plan: BootPlan;
  handle: VmmHandle;
}

/** Boots, tracks and ends the suite's VMs; the tests get their guests from here. */
export interface ContractRig {
  opts: ContractOptions;
  makeDriver: () => Driver;
  newPlan(): Promise<BootPlan>;
  /** A fresh VM of its own, ended after the test. */
  boot(driver?: Driver, edit?: (plan: BootPlan) => void): Promise<Booted>;
  /** A running guest whose agent answers: the shared one with shareGuest, else a fresh one. */
  guest(): Promise<Booted>;
  /** Tracks a handle started outside boot() (a restore) so the suite's cleanup ends it. */
  adopt(driver: Driver, handle: VmmHandle | null, dir: string): void;
  /** One health call on a fresh agent stream, bounded by `ms`. */
  health(driver: Driver, handle: VmmHandle, ms?: number): Promise<unknown>;
  /** Registers a test with the suite's timeout, or skips it when `when` is false. */
  test(name: string, fn: () => Promise<void>, when?: boolean): void;
}

/** Registers the contract tests for one driver. */
export function driverContract(name: string, makeDriver: () => Driver, opts: ContractOptions): void {
  const why = opts.skip ?? missing(opts.needs ?? []);
  if (why && inCI && !opts.skip) {
    test(`driver contract: ${name}`, () => {
      throw new Error(`prerequisite missing under CI: ${why}`);
    });
    return;
  }
  const run = why ? describe.skip : describe;
  if (why) console.warn(`skip: driver contract ${name}: ${why}`);
  run(`driver contract: ${name}${why ? ` (skipped: ${why})` : ""}`, () => {
    const rig = contractRig(makeDriver, opts);
    lifecycleContract(rig);
    instantContract(rig);
    stopContract(rig);
    startFailureContract(rig);
    if (opts.bin) {
      firecrackerConfigContract(rig);
      apiRulesContract({ ...opts, bin: opts.bin });
      firecrackerSnapshotContract(rig, opts.bin);
    }
  });
}

/** A VM the suite started (or adopted); `plan` is null for one adopted without its plan. */
interface Tracked {
  driver: Driver;
  handle: VmmHandle | null;
  dir: string;
  plan: BootPlan | null;
  shared: boolean;
}

/** The suite's VMs: each test's own are ended after it, the shared one after the suite. */
function trackVms(): { live: Tracked[]; end(entries: Tracked[]): Promise<void> } {
  const live: Tracked[] = [];
  const end = async (entries: Tracked[]) => {
    for (const { driver, handle, dir } of entries) {
      if (handle) await driver.kill(handle);
      await driver.cleanup(handle, dir);
      assertNothingLeft(dir, driver.kind);
      rmSync(dir, { recursive: true, force: true });
    }
  };
  afterEach(async () => {
    const done = live.filter((e) => !e.shared);
    live.splice(0, live.length, ...live.filter((e) => e.shared));
    await end(done);
  });
  afterAll(async () => end(live.splice(0)));
  return { live, end };
}

/** A plan in a fresh VM directory: one vCPU, the suite's kernel and root drive. */
async function contractPlan(opts: ContractOptions): Promise<BootPlan> {
  const dir = mkdtempSync(join(tmpdir(), "banger-contract-"));
  return {
    vmId: `contract-${Math.random().toString(36).slice(2, 10)}`,
    dir,
    kernelPath: await opts.kernel(),
    extraBootArgs: "quiet",
    drives: [{ id: "rootfs", path: await opts.rootfs(), readOnly: false }],
    cpus: 1,
    memoryMib: opts.memoryMib ?? 128,
    cid: 3,
    consoleLog: join(dir, "console.log"),
    vmmLog: join(dir, "vmm.log"),
    memoryFile: join(dir, "memory"),
  };
}

function contractRig(makeDriver: () => Driver, opts: ContractOptions): ContractRig {
  const { live, end } = trackVms();
  const newPlan = () => contractPlan(opts);
  const start = async (driver: Driver, shared: boolean, edit?: (plan: BootPlan) => void): Promise<Booted> => {
    const plan = await newPlan();
    edit?.(plan);
    const entry: Tracked = { driver, handle: null, dir: plan.dir, plan, shared };
    live.push(entry);
    entry.handle = await driver.start(plan);
    return { driver, plan, handle: entry.handle };
  };
  const guest = async (): Promise<Booted> => {
    const kept = opts.shareGuest ? live.find((e) => e.shared && e.handle) : undefined;
    if (kept && (await kept.driver.state(kept.handle!)) === "running") return { driver: kept.driver, plan: kept.plan!, handle: kept.handle! };
    if (kept) await end(live.splice(live.indexOf(kept), 1));
    const booted = await start(makeDriver(), opts.shareGuest ?? false);
    await opts.ready?.(booted.plan);
    if (opts.agent) await untilAnswered(booted, opts.answerMs ?? 10_000);
    return booted;
  };
  return {
    opts,
    makeDriver,
    newPlan,
    boot: (driver = makeDriver(), edit) => start(driver, false, edit),
    guest,
    adopt: (driver, handle, dir) => {
      const entry = live.find((e) => e.dir === dir);
      if (entry) entry.handle = handle;
      else live.push({ driver, handle, dir, plan: null, shared: false });
    },
    health: (driver, handle, ms = 5000) => agentHealth(driver, handle, ms),
    test: (name, fn, when = true) => (when ? test : test.skip)(name, fn, opts.timeoutMs),
  };
}

/** Asks the agent for health until it answers (a booting guest starts its agent late). */
async function untilAnswered({ driver, handle }: Booted, withinMs: number): Promise<void> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    try {
      await agentHealth(driver, handle, Math.min(3000, Math.max(500, deadline - Date.now())));
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`the guest agent did not answer within ${withinMs} ms: ${(err as Error).message}`);
      await Bun.sleep(200);
    }
  }
}

async function agentHealth(driver: Driver, handle: VmmHandle, ms: number): Promise<unknown> {
  const sock = await driver.connectAgent(handle, AGENT_PORT);
  try {
    sock.write(JSON.stringify({ id: 1, method: "health" }) + "\n");
    return JSON.parse(await readLine(sock, ms));
  } finally {
    sock.destroy();
  }
}

/** Start, the agent, and rediscovery, on the (shared) running guest. */
function lifecycleContract(rig: ContractRig): void {
  rig.test("start boots the VM and the VMM reports Running", async () => {
    const { driver, plan, handle } = await rig.guest();
    const facts = vmmFacts[driver.kind];
    expect(handle.vmm).toBe(driver.kind);
    expect(handle.controlSocket).toBe(facts.controlSocket(plan.dir));
    expect(handle.agent).toEqual(facts.agent(plan));
    expect(isAlive(handle.pid)).toBe(true);
    expect(await driver.state(handle)).toBe("running");
    expect(existsSync(plan.vmmLog)).toBe(true);
  });

  rig.test(
    "connectAgent reaches the guest agent",
    async () => {
      const { driver, handle } = await rig.guest();
      expect(await rig.health(driver, handle, rig.opts.answerMs)).toMatchObject({ id: 1, ok: true });
    },
    rig.opts.agent,
  );

  rig.test("a fresh driver rediscovers the running VMM by its socket and command line", async () => {
    const { plan, handle } = await rig.guest();
    const found = await rig.makeDriver().rediscover(plan.vmId, plan.dir);
    expect(found).toMatchObject({ pid: handle.pid, pidStartTime: handle.pidStartTime, controlSocket: handle.controlSocket });
    expect(found?.agent).toEqual(handle.agent);
    expect(await rig.makeDriver().rediscover("some-other-vm", plan.dir)).toBeNull();
    const empty = mkdtempSync(join(tmpdir(), "banger-contract-"));
    expect(await rig.makeDriver().rediscover(plan.vmId, empty)).toBeNull();
    rmSync(empty, { recursive: true });
  });
}

/** Graceful stop (which ends the shared guest), the fallback kill, and kill itself. */
function stopContract(rig: ContractRig): void {
  const grace = rig.opts.graceMs ?? 5000;
  rig.test("stop asks the guest to power off and the VMM exits on its own within the grace; cleanup leaves nothing", async () => {
    const { driver, plan, handle } = await rig.guest();
    const t0 = Date.now();
    expect(await driver.stop(handle, grace)).toBe("graceful");
    const took = Date.now() - t0;
    if (driver.kind === "qemu") console.log(`driver contract: QEMU graceful stop took ${took} ms`);
    expect(took).toBeLessThan(grace);
    expect(isAlive(handle.pid)).toBe(false);
    expect(await driver.state(handle)).toBe("exited");
    expect(await driver.stop(handle, 100)).toBe("already-exited");
    await driver.cleanup(handle, plan.dir);
    assertNothingLeft(plan.dir, driver.kind);
  });

  const ignoring = rig.opts.makeIgnoringDriver;
  rig.test(
    "stop falls back to SIGKILL within the grace bound when the guest ignores the request",
    async () => {
      const { driver, handle } = await rig.boot(ignoring!());
      const t0 = Date.now();
      expect(await driver.stop(handle, 400)).toBe("killed");
      const took = Date.now() - t0;
      expect(took).toBeGreaterThanOrEqual(400);
      expect(took).toBeLessThan(400 + 2500);
      expect(isAlive(handle.pid)).toBe(false);
    },
    ignoring !== undefined,
  );

  rig.test("kill ends the VMM at once; it is not rediscovered and cleanup leaves nothing", async () => {
    const { driver, plan, handle } = await rig.boot();
    await driver.kill(handle);
    expect(isAlive(handle.pid)).toBe(false);
    expect(await driver.state(handle)).toBe("exited");
    expect(await rig.makeDriver().rediscover(plan.vmId, plan.dir)).toBeNull();
    await driver.cleanup(handle, plan.dir);
    assertNothingLeft(plan.dir, driver.kind);
  });
}

/** A start that cannot boot fails with the VMM's own words and leaves nothing. */
function startFailureContract(rig: ContractRig): void {
  const failing = async (edit: (plan: BootPlan) => void, expected: (facts: VmmFacts) => string) => {
    const driver = rig.makeDriver();
    const plan = await rig.newPlan();
    rig.adopt(driver, null, plan.dir);
    edit(plan);
    const err = await driver.start(plan).catch((e) => e);
    expect(err).toBeInstanceOf(BangerError);
    expect(err.message).toContain(expected(vmmFacts[driver.kind]));
    assertNothingLeft(plan.dir, driver.kind);
  };
  rig.test("a bad kernel path fails the start with the VMM's message and leaves nothing", () =>
    failing(
      (plan) => (plan.kernelPath = join(plan.dir, "no-such-vmlinux")),
      (f) => f.badKernel,
    ),
  );
  rig.test("a missing initrd fails the start with the VMM's message and leaves nothing", () =>
    failing(
      (plan) => (plan.initrdPath = join(plan.dir, "no-such-initrd")),
      (f) => f.missingInitrd,
    ),
  );
}

/** Firecracker only: the API's /vm/config holds what the plan asked for. */
function firecrackerConfigContract(rig: ContractRig): void {
  rig.test("firecracker: /vm/config holds the plan's boot source, drives, machine, vsock and metrics", async () => {
    const { plan, handle } = await rig.boot();
    const config = await getJson(handle.controlSocket, "/vm/config");
    expect(config["boot-source"].boot_args).toBe("console=ttyS0 reboot=k panic=1 pci=off quiet");
    expect(config["boot-source"].kernel_image_path).toBe(plan.kernelPath);
    expect(config.drives[0]).toMatchObject({ drive_id: "rootfs", is_root_device: true, is_read_only: false });
    expect(config["machine-config"]).toMatchObject({ vcpu_count: 1, mem_size_mib: 128 });
    expect(config.vsock).toMatchObject({ guest_cid: 3, uds_path: handle.agent.path });
    expect(config.metrics).toEqual({ metrics_path: join(plan.dir, "metrics.json") });
  });

  rig.test("firecracker: an initrd goes into the boot source beside the vmlinux (a distribution kernel's)", async () => {
    const { handle, plan } = await rig.boot(undefined, (p) => {
      p.initrdPath = join(p.dir, "initrd.img");
      writeFileSync(p.initrdPath, "070701 stand-in initrd");
    });
    const config = await getJson(handle.controlSocket, "/vm/config");
    expect(config["boot-source"]).toMatchObject({ kernel_image_path: plan.kernelPath, initrd_path: plan.initrdPath });
  });
}

/** No VMM serving the directory, and no socket or pidfile of ours left in it. */
export function assertNothingLeft(dir: string, kind: VmmKind = "firecracker"): void {
  expect(vmmFacts[kind].serving(dir)).toEqual([]);
  const ours = (n: string) => n.endsWith(".sock") || n.includes(".sock_") || n.endsWith(".pid");
  const leftovers = existsSync(dir) ? readdirSync(dir).filter(ours) : [];
  expect(leftovers).toEqual([]);
}

/** GET a JSON document from a Firecracker API socket. */
export async function getJson(socket: string, path: string): Promise<any> {
  const res = await fetch(`http://localhost${path}`, { unix: socket } as RequestInit);
  return res.json();
}

/** Reads one newline-terminated line from a stream, bounded. */
export function readLine(sock: import("node:net").Socket, ms = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`no line within ${ms} ms`)), ms);
    sock.on("data", (chunk) => {
      buf += chunk.toString("utf8");
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(buf.slice(0, nl));
      }
    });
    sock.once("close", () => reject(new Error(`closed before a line: ${JSON.stringify(buf)}`)));
    sock.resume();
  });
}
