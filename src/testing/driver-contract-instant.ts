/**
 * The instant-ops half of the driver contract: pause/resume and suspend/restore through the
 * driver (every VMM), and for Firecracker a snapshot loaded in another VM directory plus its
 * snapshot request rules spoken directly, so the fake's snapshot behaviour cannot drift from the real one.
 */
import { expect, test } from "bun:test";
import { copyFileSync, existsSync, linkSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { vmmFacts, type ContractRig } from "./driver-contract.ts";
import { firecrackerFiles } from "../vm/drivers/firecracker.ts";
import { isAlive, waitForExit } from "../vm/drivers/process.ts";
import type { BootPlan, VmmHandle } from "../vm/drivers/types.ts";

const FC_VERSION = "1.16.1";

/** Registers pause/resume and suspend/restore (inside driverContract's describe), on the (shared) running guest. */
export function instantContract(rig: ContractRig): void {
  const answerMs = rig.opts.answerMs ?? 10_000;
  rig.test(
    "pause freezes the guest (its agent stops answering) and resume lets it go on",
    async () => {
      const { driver, handle } = await rig.guest();
      await driver.pause(handle);
      expect(await driver.state(handle)).toBe("paused");
      expect(
        await rig.health(driver, handle, 800).then(
          () => "answered",
          () => "silent",
        ),
      ).toBe("silent");
      await driver.resume(handle);
      expect(await driver.state(handle)).toBe("running");
      expect(await rig.health(driver, handle, answerMs)).toMatchObject({ ok: true });
    },
    rig.opts.agent,
  );

  rig.test(
    "suspend writes state and memory and ends the VMM; restore continues the guest",
    async () => {
      const { driver, plan, handle } = await rig.guest();
      const files = { state: join(plan.dir, "vmstate"), memory: plan.memoryFile };
      const meta = await driver.suspend(handle, files);
      expect(meta.vmm).toBe(driver.kind);
      if (driver.kind === "firecracker") expect(meta.version).toBe(FC_VERSION);
      expect(isAlive(handle.pid)).toBe(false);
      expect(existsSync(files.state) && existsSync(files.memory)).toBe(true);
      await driver.cleanup(handle, plan.dir);
      expect(await driver.restoreProblem(meta)).toBeNull();
      expect(await driver.restoreProblem({ ...meta, version: "1.2.0" })).toContain(`written by ${vmmFacts[driver.kind].label} 1.2.0`);
      const restored = await driver.restore(plan, files);
      rig.adopt(driver, restored, plan.dir);
      expect(await driver.state(restored)).toBe("running");
      expect(await rig.health(driver, restored, answerMs)).toMatchObject({ ok: true });
      if (driver.kind === "firecracker") await expectRestoredConfig(restored, plan);
    },
    rig.opts.agent,
  );
}

/** Firecracker's view of a restored VM: this directory's agent socket, the plan's machine. */
async function expectRestoredConfig(restored: VmmHandle, plan: BootPlan): Promise<void> {
  const config = (await (await fetch("http://localhost/vm/config", { unix: restored.controlSocket } as RequestInit)).json()) as Record<string, unknown>;
  expect(config.vsock).toMatchObject({ uds_path: firecrackerFiles(plan.dir).agentSocket });
  expect(config["machine-config"]).toMatchObject({ vcpu_count: plan.cpus, mem_size_mib: plan.memoryMib });
}

/** Firecracker only: a snapshot loaded in another VM directory, and the snapshot request rules. */
export function firecrackerSnapshotContract(rig: ContractRig, bin: string[]): void {
  snapshotElsewhereTest(rig);
  snapshotRulesTest(bin);
}

/** The plan of a copy of `plan`'s VM living in `copyDir`. */
function planInDir(plan: BootPlan, copyDir: string): BootPlan {
  return {
    ...plan,
    vmId: `${plan.vmId}c`,
    dir: copyDir,
    drives: [{ id: "rootfs", path: join(copyDir, "disk"), readOnly: false }],
    consoleLog: join(copyDir, "console.log"),
    vmmLog: join(copyDir, "vmm.log"),
    memoryFile: join(copyDir, "memory"),
  };
}

function snapshotElsewhereTest(rig: ContractRig): void {
  rig.test(
    "a snapshot loads against another VM directory: its relative drive paths open that directory's copies, a missing copy is refused",
    async () => {
      let disk = "";
      const { driver, plan, handle } = await rig.boot(undefined, (p) => {
        disk = join(p.dir, "disk");
        copyFileSync(p.drives[0]!.path, disk);
        p.drives = [{ id: "rootfs", path: disk, readOnly: false }];
      });
      await rig.health(driver, handle, 10_000);
      const frozen = { state: join(plan.dir, "vmstate"), memory: plan.memoryFile };
      await driver.snapshot(handle, frozen, plan.memoryFile);
      await driver.resume(handle);
      const copyDir = mkdtempSync(join(tmpdir(), "banger-fc-copy-"));
      const copy = planInDir(plan, copyDir);
      const files = { state: join(copyDir, "vmstate"), memory: copy.memoryFile };
      copyFileSync(frozen.state, files.state);
      linkSync(frozen.memory, files.memory);
      rig.adopt(driver, null, copyDir);
      const refused = await driver.restore(copy, files, { privateMemory: true }).catch((e: Error) => e);
      expect(refused).toBeInstanceOf(Error);
      expect((refused as Error).message).toContain("No such file or directory");
      copyFileSync(disk, join(copyDir, "disk"));
      const restored = await driver.restore(copy, files, { privateMemory: true });
      rig.adopt(driver, restored, copyDir);
      expect(await rig.health(driver, restored, 10_000)).toMatchObject({ ok: true });
      const config = (await (await fetch("http://localhost/vm/config", { unix: restored.controlSocket } as RequestInit)).json()) as {
        drives: Array<{ path_on_host: string }>;
        vsock: { uds_path: string };
      };
      expect(config.drives.map((d) => d.path_on_host)).toEqual(["disk"]);
      expect(config.vsock.uds_path).toBe(firecrackerFiles(copyDir).agentSocket);
      expect(await rig.health(driver, handle, 10_000)).toMatchObject({ ok: true });
    },
    rig.opts.agent,
  );
}

/** One call to a raw VMM's API: the status and Firecracker's fault message, if any. */
type SnapCall = (method: string, path: string, body?: unknown) => Promise<{ status: number; fault: string | undefined }>;

/** Starts a VMM with nothing configured (recorded in `procs` for cleanup) and returns its API caller. */
async function spawnSnapVmm(bin: string[], dir: string, procs: Array<ReturnType<typeof Bun.spawn>>, name: string): Promise<SnapCall> {
  const sock = join(dir, `${name}.sock`);
  const proc = Bun.spawn([...bin, "--api-sock", sock, "--id", name], { stdout: "ignore", stderr: "ignore" });
  procs.push(proc);
  for (const deadline = Date.now() + 3000; !existsSync(sock) && Date.now() < deadline; ) await Bun.sleep(10);
  await Bun.sleep(50);
  return async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`http://localhost${path}`, {
      unix: sock,
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
    } as RequestInit);
    const text = await res.text();
    return { status: res.status, fault: text ? (JSON.parse(text).fault_message as string | undefined) : undefined };
  };
}

function snapshotRulesTest(bin: string[]): void {
  test("snapshot rules: create only when paused, load only on a fresh process, a missing memory file refused", async () => {
    const dir = mkdtempSync(join(tmpdir(), "banger-fcsnap-"));
    const procs: Array<ReturnType<typeof Bun.spawn>> = [];
    try {
      const spawn = (name: string) => spawnSnapVmm(bin, dir, procs, name);
      const kernel = join(dir, "vmlinux");
      const disk = join(dir, "disk");
      writeFileSync(kernel, Buffer.alloc(4096));
      writeFileSync(disk, Buffer.alloc(1 << 20));
      const snap = await expectCreateRules(await spawn("snap-a"), dir, kernel, disk);
      await expectLoadRules(spawn, dir, kernel, snap);
    } finally {
      for (const p of procs) {
        p.kill("SIGKILL");
        await waitForExit(p.pid, 2000);
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

/** Snapshot create: refused before start and while running, Diff refused, Full taken once paused; load refused after. */
async function expectCreateRules(a: SnapCall, dir: string, kernel: string, disk: string): Promise<{ snapshot_path: string; mem_file_path: string }> {
  const snap = { snapshot_path: join(dir, "state"), mem_file_path: join(dir, "mem") };
  expect((await a("PUT", "/snapshot/create", snap)).fault).toBe("The requested operation is not supported before starting the microVM.");
  await a("PUT", "/boot-source", { kernel_image_path: kernel });
  await a("PUT", "/drives/rootfs", { drive_id: "rootfs", path_on_host: disk, is_root_device: true, is_read_only: false });
  await a("PUT", "/vsock", { guest_cid: 3, uds_path: join(dir, "a.vsock") });
  expect((await a("PUT", "/actions", { action_type: "InstanceStart" })).status).toBe(204);
  const running = await a("PUT", "/snapshot/create", snap);
  expect(running.status).toBe(400);
  expect(running.fault).toContain("save/restore unavailable while running");
  expect((await a("PATCH", "/vm", { state: "Paused" })).status).toBe(204);
  expect((await a("PUT", "/snapshot/create", { ...snap, snapshot_type: "Diff" })).fault).toContain(
    "Diff snapshots are not allowed on uVMs with dirty page tracking disabled",
  );
  expect((await a("PUT", "/snapshot/create", snap)).status).toBe(204);
  expect(
    (await a("PUT", "/snapshot/load", { snapshot_path: snap.snapshot_path, mem_backend: { backend_type: "File", backend_path: snap.mem_file_path } })).fault,
  ).toBe("The requested operation is not supported after starting the microVM.");
  return snap;
}

/** Snapshot load: refused after boot resources, a missing memory file and a bad override refused, a good load served. */
async function expectLoadRules(
  spawn: (name: string) => Promise<SnapCall>,
  dir: string,
  kernel: string,
  snap: { snapshot_path: string; mem_file_path: string },
): Promise<void> {
  const b = await spawn("snap-b");
  await b("PUT", "/boot-source", { kernel_image_path: kernel });
  expect(
    (await b("PUT", "/snapshot/load", { snapshot_path: snap.snapshot_path, mem_backend: { backend_type: "File", backend_path: snap.mem_file_path } })).fault,
  ).toContain("Loading a microVM snapshot not allowed after configuring boot-specific resources");

  const c = await spawn("snap-c");
  const missing = await c("PUT", "/snapshot/load", {
    snapshot_path: snap.snapshot_path,
    mem_backend: { backend_type: "File", backend_path: join(dir, "no-such-mem") },
  });
  expect(missing.status).toBe(400);
  expect(missing.fault).toContain("No such file or directory");
  const bad = await c("PUT", "/snapshot/load", { snapshot_path: snap.snapshot_path, vsock_override: {} });
  expect(bad.status).toBe(400);
  const loaded = await c("PUT", "/snapshot/load", {
    snapshot_path: snap.snapshot_path,
    mem_backend: { backend_type: "File", backend_path: snap.mem_file_path },
    vsock_override: { uds_path: join(dir, "c.vsock") },
    resume_vm: true,
  });
  expect(loaded.status).toBe(204);
  expect(existsSync(join(dir, "c.vsock"))).toBe(true);
}
