import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { projectRoot, sharedDir, testCacheDir } from "../../testing/skip.ts";
import { driverContract, readLine } from "../../testing/driver-contract.ts";
import { FirecrackerDriver, bootSteps, firecrackerFiles, inDir } from "./firecracker.ts";
import type { FcResponse, FirecrackerApi } from "./firecracker-api.ts";
import type { BootPlan } from "./types.ts";

const fake = [process.execPath, join(projectRoot, "src/testing/fake-firecracker.ts")];
const scratch = mkdtempSync(join(tmpdir(), "banger-fc-fixtures-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
/** A VM directory inside the scratch dir, so it goes with it even when a test fails. */
const vmDir = () => mkdtempSync(join(scratch, "vm-"));

/** A file standing in for a kernel or disk: the fake only checks that it opens. */
function fixtureFile(name: string): string {
  const path = join(scratch, name);
  if (!existsSync(path)) writeFileSync(path, Buffer.alloc(1 << 20));
  return path;
}

driverContract("fake firecracker", () => new FirecrackerDriver({ bin: fake }), {
  skip: null,
  bin: fake,
  kernel: () => fixtureFile("vmlinux"),
  rootfs: () => fixtureFile("rootfs.ext4"),
  makeIgnoringDriver: () => new FirecrackerDriver({ bin: [...fake, "--ignore-ctrl-alt-del"] }),
  agent: true,
  graceMs: 3000,
});

/** Why the real-Firecracker run cannot happen here; a skip, not a CI failure (Firecracker is not obtainable here). */
function realFirecrackerMissing(): string | null {
  const bin = process.env.BANGER_TEST_FIRECRACKER;
  if (!bin) return "BANGER_TEST_FIRECRACKER does not name a firecracker binary";
  if (!existsSync("/dev/kvm")) return "no /dev/kvm";
  if (!/\b(vmx|svm)\b/.test(readFileSync("/proc/cpuinfo", "utf8"))) return "no vmx/svm CPU flag: KVM here cannot run Firecracker guests";
  if (!process.env.BANGER_TEST_FIRECRACKER_ROOTFS) return "BANGER_TEST_FIRECRACKER_ROOTFS does not name a bootable rootfs with the guest agent";
  return null;
}

/** The fixture kernel, decompressed once into the test cache. */
function fixtureKernel(): string {
  const out = join(testCacheDir, "vmlinux-6.1.192");
  if (!existsSync(out)) {
    spawnSync("zstd", ["-d", "-q", "-f", join(sharedDir, "kernels/vmlinux-6.1.192.zst"), "-o", out], { stdio: "inherit" });
  }
  return out;
}

const realBin = process.env.BANGER_TEST_FIRECRACKER ?? "firecracker";
driverContract("real firecracker", () => new FirecrackerDriver({ bin: realBin }), {
  skip: realFirecrackerMissing(),
  bin: [realBin],
  kernel: fixtureKernel,
  rootfs: () => process.env.BANGER_TEST_FIRECRACKER_ROOTFS!,
  agent: true,
  graceMs: 10_000,
});

function plan(dir: string, over: Partial<BootPlan> = {}): BootPlan {
  return {
    vmId: "unit",
    dir,
    kernelPath: "/k",
    extraBootArgs: "ip=dhcp",
    cpus: 2,
    memoryMib: 512,
    cid: 7,
    drives: [
      { id: "rootfs", path: "/r", readOnly: true },
      { id: "work", path: "/w", readOnly: false },
    ],
    nic: { tap: "tap0", mac: "06:00:ac:10:00:02" },
    consoleLog: join(dir, "c.log"),
    vmmLog: join(dir, "v.log"),
    memoryFile: join(dir, "memory"),
    ...over,
  };
}

test("boot steps go logger, metrics, machine, boot source, drives, network, vsock, start", async () => {
  const dir = vmDir();
  const calls: Array<[string, string, unknown]> = [];
  const api: FirecrackerApi = { request: async (m, p, b): Promise<FcResponse> => (calls.push([m, p, b]), { status: 204, body: null }) };
  for (const [, step] of bootSteps(plan(dir), firecrackerFiles(dir))) await step(api);
  expect(calls.map(([m, p]) => `${m} ${p}`)).toEqual([
    "PUT /logger",
    "PUT /metrics",
    "PUT /machine-config",
    "PUT /boot-source",
    "PUT /drives/rootfs",
    "PUT /drives/work",
    "PUT /network-interfaces/eth0",
    "PUT /vsock",
    "PUT /actions",
  ]);
  expect(calls[3]![2]).toEqual({ kernel_image_path: "/k", boot_args: "console=ttyS0 reboot=k panic=1 pci=off ip=dhcp" });
  expect(calls[4]![2]).toEqual({ drive_id: "rootfs", path_on_host: "/r", is_root_device: true, is_read_only: true });
  expect(calls[5]![2]).toMatchObject({ drive_id: "work", is_root_device: false });
  expect(calls[6]![2]).toEqual({ iface_id: "eth0", host_dev_name: "tap0", guest_mac: "06:00:ac:10:00:02" });
  expect(calls[7]![2]).toEqual({ guest_cid: 7, uds_path: join(dir, "agent.sock") });
  expect(calls[8]![2]).toEqual({ action_type: "InstanceStart" });
});

test("a missing TAP fails the network step with Firecracker's message and leaves nothing", async () => {
  const dir = vmDir();
  const p = plan(dir, {
    kernelPath: fixtureFile("vmlinux"),
    drives: [{ id: "rootfs", path: fixtureFile("rootfs.ext4"), readOnly: false }],
    nic: { tap: "bgnotap9", mac: "06:00:00:00:00:01" },
  });
  const err = await new FirecrackerDriver({ bin: fake }).start(p).catch((e) => e);
  expect(err.message).toContain('boot step "network" failed');
  expect(err.message).toContain("Open tap device failed");
  expect(existsSync(join(dir, "fc.sock")) || existsSync(join(dir, "agent.sock"))).toBe(false);
});

test("connectAgent retries until a slow agent listens (fake --agent-delay-ms 600)", async () => {
  const dir = vmDir();
  const driver = new FirecrackerDriver({ bin: [...fake, "--agent-delay-ms", "600"] });
  const handle = await driver.start(
    plan(dir, { kernelPath: fixtureFile("vmlinux"), drives: [{ id: "rootfs", path: fixtureFile("rootfs.ext4"), readOnly: false }], nic: undefined }),
  );
  try {
    const t0 = Date.now();
    const sock = await driver.connectAgent(handle, 1024);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
    sock.write('{"id":7,"method":"health"}\n');
    expect(JSON.parse(await readLine(sock))).toMatchObject({ id: 7, ok: true });
    sock.destroy();
  } finally {
    await driver.kill(handle);
    await driver.cleanup(handle, dir);
  }
});

test("fake start reaches Running (and prints how long it took, for the benchmarks)", async () => {
  const dir = vmDir();
  const driver = new FirecrackerDriver({ bin: fake });
  const t0 = performance.now();
  const handle = await driver.start(
    plan(dir, { kernelPath: fixtureFile("vmlinux"), drives: [{ id: "rootfs", path: fixtureFile("rootfs.ext4"), readOnly: false }], nic: undefined }),
  );
  const ms = performance.now() - t0;
  console.log(`fake firecracker: spawn to InstanceStart in ${ms.toFixed(0)} ms`);
  expect(await driver.state(handle)).toBe("running");
  await driver.stop(handle, 3000);
  await driver.cleanup(handle, dir);
});

test("drives in the VM directory are given relative to it (Firecracker's working directory); others stay absolute", () => {
  expect(inDir("/s/vms/a", "/s/vms/a/overlay.ext4")).toBe("overlay.ext4");
  expect(inDir("/s/vms/a", "/s/vms/a/sub/x")).toBe("sub/x");
  expect(inDir("/s/vms/a", "/s/images/b/rootfs.ext4")).toBe("/s/images/b/rootfs.ext4");
  expect(inDir("/s/vms/a", "/s/vms/ab/overlay.ext4")).toBe("/s/vms/ab/overlay.ext4");
  expect(inDir("/s/vms/a", "/s/vms/a")).toBe("/s/vms/a");
});
