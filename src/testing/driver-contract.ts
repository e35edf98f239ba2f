/**
 * The driver contract suite: the same tests against the fake Firecracker and, when present, a real one,
 * so the fake cannot drift from the thing it stands in for. Call it from a *.test.ts file.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { firecrackerFiles } from "../vm/drivers/firecracker.ts";
import { findByArgs, isAlive } from "../vm/drivers/process.ts";
import { apiRulesContract } from "./driver-contract-api.ts";
import { instantContract } from "./driver-contract-instant.ts";
import type { BootPlan, Driver, VmmHandle } from "../vm/drivers/types.ts";

/** What the suite needs to know about the VMM under test. */
export interface ContractOptions {
  /** Why the suite cannot run on this machine, or null. A reason skips (never fails) the suite. */
  skip: string | null;
  /** The VMM's argv prefix, for the raw API rules. */
  bin: string[];
  /** A kernel the VMM can boot (any readable file for the fake). */
  kernel: () => string | Promise<string>;
  /** A root drive (any writable file for the fake; a bootable rootfs for a real VMM). */
  rootfs: () => string | Promise<string>;
  /** A driver whose guest ignores Ctrl+Alt+Del; without one that test is skipped. */
  makeIgnoringDriver?: () => Driver;
  /** Whether the guest serves the agent's health call on vsock port 1024. */
  agent: boolean;
  /** Grace for graceful stops. */
  graceMs?: number;
}

const AGENT_PORT = 1024;

/** Registers the contract tests for one driver. */
export function driverContract(name: string, makeDriver: () => Driver, opts: ContractOptions): void {
  const run = opts.skip ? describe.skip : describe;
  if (opts.skip) console.warn(`skip: driver contract ${name}: ${opts.skip}`);
  run(`driver contract: ${name}${opts.skip ? ` (skipped: ${opts.skip})` : ""}`, () => {
    const live: Array<{ driver: Driver; handle: VmmHandle | null; dir: string }> = [];

    async function newPlan(): Promise<BootPlan> {
      const dir = mkdtempSync(join(tmpdir(), "banger-fc-"));
      return {
        vmId: `contract-${Math.random().toString(36).slice(2, 10)}`,
        dir,
        kernelPath: await opts.kernel(),
        extraBootArgs: "quiet",
        drives: [{ id: "rootfs", path: await opts.rootfs(), readOnly: false }],
        cpus: 1,
        memoryMib: 128,
        cid: 3,
        consoleLog: join(dir, "console.log"),
        vmmLog: join(dir, "vmm.log"),
        memoryFile: join(dir, "memory"),
      };
    }

    async function boot(driver = makeDriver(), edit?: (plan: BootPlan) => void) {
      const plan = await newPlan();
      edit?.(plan);
      const entry = { driver, handle: null as VmmHandle | null, dir: plan.dir };
      live.push(entry);
      entry.handle = await driver.start(plan);
      return { driver, plan, handle: entry.handle };
    }

    afterEach(async () => {
      for (const { driver, handle, dir } of live.splice(0)) {
        if (handle) await driver.kill(handle);
        await driver.cleanup(handle, dir);
        assertNothingLeft(dir);
        rmSync(dir, { recursive: true, force: true });
      }
    });

    test("start runs the full boot sequence and the VMM reports Running", async () => {
      const { driver, plan, handle } = await boot();
      expect(handle.vmm).toBe("firecracker");
      expect(handle.controlSocket).toBe(firecrackerFiles(plan.dir).apiSocket);
      expect(handle.agent).toEqual({ kind: "hybrid-vsock", path: join(plan.dir, "agent.sock"), cid: 3 });
      expect(isAlive(handle.pid)).toBe(true);
      expect(await driver.state(handle)).toBe("running");
      const config = await getJson(handle.controlSocket, "/vm/config");
      expect(config["boot-source"].boot_args).toBe("console=ttyS0 reboot=k panic=1 pci=off quiet");
      expect(config["boot-source"].kernel_image_path).toBe(plan.kernelPath);
      expect(config.drives[0]).toMatchObject({ drive_id: "rootfs", is_root_device: true, is_read_only: false });
      expect(config["machine-config"]).toMatchObject({ vcpu_count: 1, mem_size_mib: 128 });
      expect(config.vsock).toMatchObject({ guest_cid: 3, uds_path: handle.agent.path });
      expect(config.metrics).toEqual({ metrics_path: join(plan.dir, "metrics.json") });
      expect(existsSync(plan.vmmLog)).toBe(true);
    });

    test("a bad kernel path fails at PUT /boot-source with Firecracker's message and leaves nothing", async () => {
      const plan = await newPlan();
      live.push({ driver: makeDriver(), handle: null, dir: plan.dir });
      plan.kernelPath = join(plan.dir, "no-such-vmlinux");
      const err = await makeDriver()
        .start(plan)
        .catch((e) => e);
      expect(err).toBeInstanceOf(BangerError);
      expect(err.message).toContain("Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)");
      expect(findByArgs("--api-sock", firecrackerFiles(plan.dir).apiSocket).filter(isAlive)).toEqual([]);
      assertNothingLeft(plan.dir);
    });

    test("an initrd goes into the boot source beside the vmlinux (a distribution kernel's)", async () => {
      const plan = await newPlan();
      const entry = { driver: makeDriver(), handle: null as VmmHandle | null, dir: plan.dir };
      live.push(entry);
      plan.initrdPath = join(plan.dir, "initrd.img");
      writeFileSync(plan.initrdPath, "070701 stand-in initrd");
      entry.handle = await entry.driver.start(plan);
      const config = await getJson(entry.handle.controlSocket, "/vm/config");
      expect(config["boot-source"]).toMatchObject({ kernel_image_path: plan.kernelPath, initrd_path: plan.initrdPath });
    });

    test("a missing initrd fails at PUT /boot-source with Firecracker's message and leaves nothing", async () => {
      const plan = await newPlan();
      live.push({ driver: makeDriver(), handle: null, dir: plan.dir });
      plan.initrdPath = join(plan.dir, "no-such-initrd");
      const err = await makeDriver()
        .start(plan)
        .catch((e) => e);
      expect(err).toBeInstanceOf(BangerError);
      expect(err.message).toContain(
        "Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. No such file or directory (os error 2)",
      );
      expect(findByArgs("--api-sock", firecrackerFiles(plan.dir).apiSocket).filter(isAlive)).toEqual([]);
      assertNothingLeft(plan.dir);
    });

    test("stop sends SendCtrlAltDel and the VMM exits on its own within the grace", async () => {
      const { driver, handle } = await boot();
      const t0 = Date.now();
      expect(await driver.stop(handle, opts.graceMs ?? 5000)).toBe("graceful");
      expect(Date.now() - t0).toBeLessThan(opts.graceMs ?? 5000);
      expect(isAlive(handle.pid)).toBe(false);
      expect(await driver.state(handle)).toBe("exited");
      expect(await driver.stop(handle, 100)).toBe("already-exited");
    });

    const ignoring = opts.makeIgnoringDriver;
    (ignoring ? test : test.skip)("stop falls back to SIGKILL within the grace bound when the guest ignores Ctrl+Alt+Del", async () => {
      const { driver, handle } = await boot(ignoring!());
      const t0 = Date.now();
      expect(await driver.stop(handle, 400)).toBe("killed");
      const took = Date.now() - t0;
      expect(took).toBeGreaterThanOrEqual(400);
      expect(took).toBeLessThan(400 + 2500);
      expect(isAlive(handle.pid)).toBe(false);
    });

    (opts.agent ? test : test.skip)("connectAgent reaches the guest agent through hybrid vsock", async () => {
      const { driver, handle } = await boot();
      const sock = await driver.connectAgent(handle, AGENT_PORT);
      try {
        sock.write(JSON.stringify({ id: 1, method: "health" }) + "\n");
        const reply = JSON.parse(await readLine(sock));
        expect(reply).toMatchObject({ id: 1, ok: true });
      } finally {
        sock.destroy();
      }
    });

    test("a fresh driver rediscovers the running VMM by its socket and command line", async () => {
      const { plan, handle } = await boot();
      const found = await makeDriver().rediscover(plan.vmId, plan.dir);
      expect(found).toMatchObject({ pid: handle.pid, pidStartTime: handle.pidStartTime, controlSocket: handle.controlSocket });
      expect(found?.agent).toEqual(handle.agent);
      expect(await makeDriver().rediscover("some-other-vm", plan.dir)).toBeNull();
      const empty = mkdtempSync(join(tmpdir(), "banger-fc-"));
      expect(await makeDriver().rediscover(plan.vmId, empty)).toBeNull();
      rmSync(empty, { recursive: true });
    });

    apiRulesContract(opts);

    instantContract(opts, {
      boot: (edit) => boot(makeDriver(), edit),
      adopt: (driver, handle, dir) => {
        const entry = live.find((e) => e.dir === dir);
        if (entry) entry.handle = handle;
        else live.push({ driver, handle, dir });
      },
      health: async (driver, handle, ms = 5000) => {
        const sock = await driver.connectAgent(handle, AGENT_PORT);
        try {
          sock.write(JSON.stringify({ id: 1, method: "health" }) + "\n");
          return JSON.parse(await readLine(sock, ms));
        } finally {
          sock.destroy();
        }
      },
    });
  });
}

/** No VMM serving the directory, and no socket of ours left in it. */
export function assertNothingLeft(dir: string): void {
  expect(findByArgs("--api-sock", firecrackerFiles(dir).apiSocket).filter(isAlive)).toEqual([]);
  const leftovers = existsSync(dir) ? readdirSync(dir).filter((n) => n.endsWith(".sock") || n.includes(".sock_")) : [];
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
