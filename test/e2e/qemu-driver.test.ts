import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chooseAccel, hostAccelDeps, kvmProblem } from "../../src/vm/drivers/accel";
import { isAlive } from "../../src/vm/drivers/process";
import { QemuDriver } from "../../src/vm/drivers/qemu";
import { hostRunner } from "../../src/host/runner";
import { bootTestGuest, guestChecks, makeTestRootfs, removeTestRootfs, testSshKey, type TestGuest } from "../../src/testing/guest-fixtures";
import { projectRoot, testNeeds } from "../../src/testing/skip";

// The guest reports its block devices on the agent port, then echoes every chunk back.
const echoScript = `import os, time
fd = os.open("/dev/virtio-ports/org.banger.agent", os.O_RDWR)
def info(d):
    size = open(f"/sys/block/{d}/size").read().strip()
    ro = open(f"/sys/block/{d}/ro").read().strip()
    return f"{d}={size}:{ro}"
disks = " ".join(info(d) for d in sorted(os.listdir("/sys/block")) if d.startswith("vd"))
os.write(fd, f"disks {disks}\\n".encode())
while True:
    data = os.read(fd, 4096)
    if data:
        os.write(fd, b"echo:" + data)
    else:
        time.sleep(0.05)
`;
const echoUnit = `[Unit]
Description=banger test echo on the agent port
[Service]
ExecStart=/usr/bin/python3 -u /usr/local/bin/agent-echo.py
Restart=always
[Install]
WantedBy=multi-user.target
`;

const checks = guestChecks();
const grace = 30_000;
const login = /login: /;

/** Reads from the stream until `pattern` matches what arrived, bounded. */
function readUntil(sock: Socket, pattern: RegExp, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = "";
    const timer = setTimeout(() => done(new Error(`agent stream never matched ${pattern}; got ${JSON.stringify(got)}`)), ms);
    const onData = (d: Buffer) => {
      got += d.toString();
      if (pattern.test(got)) done(null);
    };
    const done = (err: Error | null) => {
      clearTimeout(timer);
      sock.off("data", onData);
      err ? reject(err) : resolve(got);
    };
    sock.on("data", onData);
  });
}

// Start, rediscovery, pause, suspend, graceful stop and kill are the driver contract's (qemu-contract.test.ts);
// this file covers what is QEMU's own: drive order, the raw agent channel, an orphaned QEMU, SSH over a TAP.
describe("QEMU microvm driver with a real guest under TCG (needs qemu, mmdebstrap, zstd, root)", () => {
  let image = "";
  let disks = "";
  const guests: TestGuest[] = [];
  const warnings: string[] = [];
  const driver = new QemuDriver({ accel: "auto", warn: (m) => warnings.push(m) });

  beforeAll(async () => {
    if (checks.some(([ok]) => !ok)) return;
    image = await makeTestRootfs({
      sizeMiB: 1024,
      extraFiles: [
        { path: "/usr/local/bin/agent-echo.py", content: echoScript, mode: 0o755 },
        { path: "/etc/systemd/system/agent-echo.service", content: echoUnit },
        { path: "/etc/systemd/system/multi-user.target.wants/agent-echo.service", symlink: "/etc/systemd/system/agent-echo.service" },
      ],
    });
    disks = mkdtempSync(join(tmpdir(), "banger-disks-"));
    writeFileSync(join(disks, "b.img"), "");
    truncateSync(join(disks, "b.img"), 16 << 20);
    writeFileSync(join(disks, "c.img"), "");
    truncateSync(join(disks, "c.img"), 32 << 20);
  }, 600_000);

  afterAll(async () => {
    for (const g of guests) await g.dispose();
    if (image) removeTestRootfs(image);
    if (disks) rmSync(disks, { recursive: true, force: true });
  });

  const boot = async () => {
    const g = await bootTestGuest({
      image,
      driver,
      extraDrives: [
        { id: "b", path: join(disks, "b.img"), readOnly: true },
        { id: "c", path: join(disks, "c.img"), readOnly: false },
      ],
    });
    guests.push(g);
    return g;
  };

  testNeeds("auto accel picks TCG with a warning where the CPU has no vmx/svm", checks, () => {
    const seen: string[] = [];
    const accel = chooseAccel("auto", { ...hostAccelDeps, warn: (m) => seen.push(m) });
    const problem = kvmProblem(hostAccelDeps);
    expect(accel).toBe(problem ? "tcg" : "kvm");
    if (problem) expect(seen[0]).toContain("using TCG (slow)");
  });

  testNeeds(
    "boots to a login prompt, serves the agent channel, maps drives in plan order (real guest)",
    checks,
    async () => {
      const g = await boot();
      const bootMs = await g.waitForConsole(login, 180_000);
      console.log(`qemu e2e: boot to login prompt ${bootMs} ms (accel ${driver.resolveAccel()})`);
      expect(g.consoleText()).toContain("Welcome to");
      expect(await driver.state(g.handle)).toBe("running");

      const sock = await driver.connectAgent(g.handle, 1024);
      try {
        const report = await readUntil(sock, /disks .*\n/, 60_000);
        // plan.drives[i] is /dev/vd{a,b,c}[i]: sizes in 512-byte sectors, then the ro flag.
        expect(report).toContain("disks vda=2097152:0 vdb=32768:1 vdc=65536:0");
        sock.write("ping 123\n");
        expect(await readUntil(sock, /echo:ping 123\n/, 10_000)).toContain("echo:ping 123");
      } finally {
        sock.destroy();
      }
    },
    300_000,
  );

  testNeeds(
    "QEMU outlives a daemon killed with SIGKILL and the next one rediscovers it (real guest)",
    checks,
    async () => {
      // The first guest goes first: the orphan opens the same image read-write.
      const first = guests.shift()!;
      await first.dispose();
      const dir = mkdtempSync(join(tmpdir(), "banger-orphan-"));
      const plan = {
        ...first.plan,
        vmId: "orphan-vm",
        dir,
        consoleLog: join(dir, "console.log"),
        vmmLog: join(dir, "vmm.log"),
        memoryFile: join(dir, "ram"),
      };
      // A separate process plays the daemon: it starts QEMU, prints the handle and dies hard.
      const code = `import { QemuDriver } from ${JSON.stringify(join(projectRoot, "src/vm/drivers/qemu.ts"))};
const h = await new QemuDriver({ accel: "auto", warn: () => {} }).start(JSON.parse(process.env.PLAN));
console.log(JSON.stringify(h));
process.kill(process.pid, "SIGKILL");`;
      const daemon = Bun.spawn(["bun", "-e", code], { env: { ...process.env, PLAN: JSON.stringify(plan) }, stdout: "pipe", stderr: "inherit" });
      const out = await new Response(daemon.stdout).text();
      expect(await daemon.exited).not.toBe(0);
      const started = JSON.parse(out.trim()) as { pid: number };
      try {
        const found = await driver.rediscover("orphan-vm", dir);
        expect(found?.pid).toBe(started.pid);
        expect(await driver.state(found!)).toBe("running");
        await driver.kill(found!);
        expect(isAlive(started.pid)).toBe(false);
      } finally {
        if (isAlive(started.pid)) process.kill(started.pid, "SIGKILL");
        await driver.cleanup(null, dir);
        rmSync(dir, { recursive: true, force: true });
      }
    },
    60_000,
  );

  testNeeds(
    "the guest is reachable by SSH over its TAP with the fixture key (real guest, root)",
    checks,
    async () => {
      const tap = `bgq${process.pid % 100000}`;
      const ip = (...argv: string[]) => hostRunner.run(["ip", ...argv]);
      await ip("tuntap", "add", "dev", tap, "mode", "tap");
      try {
        await ip("addr", "add", "172.29.77.1/24", "dev", tap);
        await ip("link", "set", tap, "up");
        const g = await bootTestGuest({
          image,
          driver,
          nic: { tap, mac: "06:00:ac:1d:4d:02" },
          extraBootArgs: "ip=172.29.77.2::172.29.77.1:255.255.255.0:guest:eth0:off",
        });
        guests.push(g);
        const t0 = Date.now();
        const key = await testSshKey();
        const ssh = [
          "ssh",
          "-i",
          key.privateKeyPath,
          "-o",
          "StrictHostKeyChecking=no",
          "-o",
          "UserKnownHostsFile=/dev/null",
          "-o",
          "ConnectTimeout=3",
          "-o",
          "BatchMode=yes",
          "root@172.29.77.2",
        ];
        let out = "";
        for (const deadline = Date.now() + 120_000; Date.now() < deadline && !out.includes("hello-from-guest"); await Bun.sleep(500)) {
          out = (await hostRunner.run([...ssh, "echo hello-from-guest; cat /sys/class/net/eth0/address"], { allowFailure: true, timeoutMs: 10_000 })).stdout;
        }
        expect(out).toContain("hello-from-guest");
        console.log(`qemu e2e: SSH over the TAP answered ${Date.now() - t0} ms after start`);
        expect(out).toContain("06:00:ac:1d:4d:02");
        expect(await driver.stop(g.handle, grace)).toBe("graceful");
      } finally {
        for (const g of guests) {
          await g.dispose();
          expect(isAlive(g.handle.pid)).toBe(false);
        }
        guests.length = 0;
        await hostRunner.run(["ip", "link", "del", tap], { allowFailure: true });
      }
    },
    240_000,
  );

  testNeeds("no QEMU process of these tests outlives them (real guest)", checks, async () => {
    for (const g of guests) {
      await g.dispose();
      expect(isAlive(g.handle.pid)).toBe(false);
      expect(existsSync(g.dir)).toBe(false);
    }
    guests.length = 0;
  });
});
