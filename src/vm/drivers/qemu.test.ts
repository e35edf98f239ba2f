import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../../errors";
import { hasHardwareVirt } from "../../host/cpu.ts";
import { chooseAccel, hostTscKhz } from "./accel";
import { buildQemuArgv, qemuEscape, qemuStatusToState, QemuDriver } from "./qemu";
import { qmpCall, QmpClient } from "./qmp";
import type { BootPlan } from "./types";

const plan: BootPlan = {
  vmId: "vm1",
  dir: "/state/vms/vm1",
  kernelPath: "/k/vmlinux",
  extraBootArgs: "ip=172.30.0.2::172.30.0.1:255.255.255.0:web:eth0:off",
  drives: [
    { id: "base", path: "/img/base.ext4", readOnly: true },
    { id: "overlay", path: "/state/vms/vm1/overlay.ext4", readOnly: false },
    { id: "work", path: "/state/vms/vm1/work,1.ext4", readOnly: false },
  ],
  nic: { tap: "tap3", mac: "06:00:ac:1e:00:02" },
  cpus: 2,
  memoryMib: 1024,
  cid: 7,
  consoleLog: "/state/vms/vm1/console.log",
  vmmLog: "/state/vms/vm1/vmm.log",
  memoryFile: "/state/vms/vm1/ram",
};

/** The value after each occurrence of a flag. */
function values(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []));
}

describe("buildQemuArgv", () => {
  const argv = buildQemuArgv(plan, { bin: "qemu-system-x86_64", accel: "tcg", vhostVsock: false });

  test("microvm with TCG uses -cpu max and the plan's size", () => {
    expect(argv[0]).toBe("qemu-system-x86_64");
    expect(values(argv, "-M")[0]).toStartWith("microvm,");
    expect(values(argv, "-accel")).toEqual(["tcg"]);
    expect(values(argv, "-cpu")).toEqual(["max"]);
    expect(values(argv, "-smp")).toEqual(["2"]);
    expect(values(argv, "-m")).toEqual(["1024"]);
    expect(argv).toContain("-nodefaults");
    expect(argv).toContain("-no-reboot");
  });

  test("TCG guests get the host TSC rate so PIT calibration on a busy host cannot hang the boot; KVM guests do not", () => {
    const tcg = buildQemuArgv({ ...plan, extraBootArgs: "" }, { bin: "q", accel: "tcg", vhostVsock: false, tscKhz: 2596124 });
    expect(values(tcg, "-append")).toEqual(["console=ttyS0 reboot=k panic=1 root=/dev/vda ro tsc_early_khz=2596124"]);
    const kvm = buildQemuArgv({ ...plan, extraBootArgs: "" }, { bin: "q", accel: "kvm", vhostVsock: false, tscKhz: 2596124 });
    expect(values(kvm, "-append")[0]).not.toContain("tsc_early_khz");
    expect(hostTscKhz("processor\t: 0\ncpu MHz\t\t: 2596.124\n")).toBe(2596124);
    expect(hostTscKhz("processor\t: 0\n")).toBeNull();
  });

  test("an initrd is passed with -initrd only when the plan has one", () => {
    expect(values(argv, "-initrd")).toEqual([]);
    const withInitrd = buildQemuArgv({ ...plan, initrdPath: "/img/initrd.img" }, { bin: "q", accel: "tcg", vhostVsock: false });
    expect(values(withInitrd, "-initrd")).toEqual(["/img/initrd.img"]);
    expect(values(withInitrd, "-M")[0]).toContain("acpi=on");
  });

  test("KVM uses -cpu host", () => {
    const kvm = buildQemuArgv(plan, { bin: "q", accel: "kvm", vhostVsock: false });
    expect(values(kvm, "-cpu")).toEqual(["host"]);
    expect(values(kvm, "-accel")).toEqual(["kvm"]);
  });

  test("boot args start with the console and root, ro when the root drive is read-only", () => {
    expect(values(argv, "-append")).toEqual([`console=ttyS0 reboot=k panic=1 root=/dev/vda ro ${plan.extraBootArgs}`]);
    const rw = buildQemuArgv({ ...plan, extraBootArgs: "", drives: [{ id: "r", path: "/r", readOnly: false }] }, { bin: "q", accel: "tcg", vhostVsock: false });
    expect(values(rw, "-append")).toEqual(["console=ttyS0 reboot=k panic=1 root=/dev/vda rw"]);
  });

  test("drives are virtio-mmio block devices in plan order, read-only honoured, commas escaped", () => {
    expect(values(argv, "-drive")).toEqual([
      "id=disk-base,file=/img/base.ext4,format=raw,if=none,readonly=on",
      "id=disk-overlay,file=/state/vms/vm1/overlay.ext4,format=raw,if=none,readonly=off",
      "id=disk-work,file=/state/vms/vm1/work,,1.ext4,format=raw,if=none,readonly=off",
    ]);
    const blk = values(argv, "-device").filter((d) => d.startsWith("virtio-blk-device"));
    expect(blk).toEqual(["virtio-blk-device,drive=disk-base", "virtio-blk-device,drive=disk-overlay", "virtio-blk-device,drive=disk-work"]);
  });

  test("the NIC is a virtio-net device on the plan's TAP", () => {
    expect(values(argv, "-netdev")).toEqual(["tap,id=n0,ifname=tap3,script=no,downscript=no"]);
    expect(values(argv, "-device")).toContain("virtio-net-device,netdev=n0,mac=06:00:ac:1e:00:02");
    const noNic = buildQemuArgv({ ...plan, nic: undefined }, { bin: "q", accel: "tcg", vhostVsock: false });
    expect(noNic).not.toContain("-netdev");
  });

  test("the agent channel is virtio-serial without vhost-vsock, vhost-vsock with it", () => {
    expect(values(argv, "-chardev")).toContain("socket,id=ag,path=/state/vms/vm1/agent.sock,server=on,wait=off");
    expect(values(argv, "-device")).toContain("virtserialport,chardev=ag,name=org.banger.agent");
    const vs = buildQemuArgv(plan, { bin: "q", accel: "tcg", vhostVsock: true });
    expect(values(vs, "-device")).toContain("vhost-vsock-device,guest-cid=7");
    expect(values(vs, "-device").some((d) => d.startsWith("virtserialport"))).toBe(false);
  });

  test("console, QMP and pidfile live where the plan says", () => {
    expect(values(argv, "-chardev")).toContain("file,id=con,path=/state/vms/vm1/console.log,append=on");
    expect(values(argv, "-serial")).toEqual(["chardev:con"]);
    expect(values(argv, "-qmp")).toEqual(["unix:/state/vms/vm1/qmp.sock,server=on,wait=off"]);
    expect(values(argv, "-pidfile")).toEqual(["/state/vms/vm1/qemu.pid"]);
  });

  test("a plan without drives is refused", () => {
    expect(() => buildQemuArgv({ ...plan, drives: [] }, { bin: "q", accel: "tcg", vhostVsock: false })).toThrow(BangerError);
  });

  test("qemuEscape doubles commas", () => {
    expect(qemuEscape("/a,b,,c")).toBe("/a,,b,,,,c");
  });
});

const intelFlags = "processor\t: 0\nflags\t\t: fpu vme de pse vmx ssse3\n";
const amdFlags = "processor\t: 0\nflags\t\t: fpu svm lm\n";
const noVirt = "processor\t: 0\nflags\t\t: fpu vme de pse sse2 hypervisor\nvmx flags\t: vnmi\n";

describe("accel detection", () => {
  const deps = (cpuinfo: string, kvm: boolean) => {
    const warnings: string[] = [];
    return { warnings, deps: { readFile: () => cpuinfo, canOpenKvm: () => kvm, warn: (m: string) => void warnings.push(m) } };
  };

  test("vmx or svm in a flags line means hardware virtualization", () => {
    expect(hasHardwareVirt(intelFlags)).toBe(true);
    expect(hasHardwareVirt(amdFlags)).toBe(true);
    expect(hasHardwareVirt(noVirt)).toBe(false);
    expect(hasHardwareVirt("")).toBe(false);
  });

  test("auto picks KVM only with the CPU flag and an openable /dev/kvm", () => {
    expect(chooseAccel("auto", deps(intelFlags, true).deps)).toBe("kvm");
    const noDev = deps(intelFlags, false);
    expect(chooseAccel("auto", noDev.deps)).toBe("tcg");
    expect(noDev.warnings[0]).toContain("/dev/kvm");
  });

  test("auto falls back to TCG with a warning when /dev/kvm opens but the CPU has no vmx/svm (nested PVM KVM)", () => {
    const d = deps(noVirt, true);
    expect(chooseAccel("auto", d.deps)).toBe("tcg");
    expect(d.warnings).toHaveLength(1);
    expect(d.warnings[0]).toContain("no hardware virtualization; using TCG (slow)");
  });

  test("explicit tcg never probes; explicit kvm fails with a hint when KVM is unusable", () => {
    const d = deps(noVirt, false);
    expect(chooseAccel("tcg", d.deps)).toBe("tcg");
    expect(d.warnings).toHaveLength(0);
    expect(() => chooseAccel("kvm", d.deps)).toThrow(/accel = "kvm"/);
    expect(chooseAccel("kvm", deps(amdFlags, true).deps)).toBe("kvm");
  });

  test("the driver detects once and uses the injected probes", () => {
    const warnings: string[] = [];
    let reads = 0;
    const driver = new QemuDriver({ accel: "auto", warn: (m) => warnings.push(m), readFile: () => (reads++, noVirt), canOpenKvm: () => true });
    expect(driver.resolveAccel()).toBe("tcg");
    expect(driver.resolveAccel()).toBe("tcg");
    expect(reads).toBe(1);
    expect(warnings).toHaveLength(1);
  });
});

test("QMP run states map onto the driver states", () => {
  expect(qemuStatusToState("running")).toBe("running");
  expect(qemuStatusToState("paused")).toBe("paused");
  expect(qemuStatusToState("prelaunch")).toBe("not-started");
  expect(qemuStatusToState("shutdown")).toBe("exited");
});

describe("QMP client against a scripted server", () => {
  let dir: string;
  let server: Server | null = null;
  afterEach(() => {
    server?.close();
    server = null;
    rmSync(dir, { recursive: true, force: true });
  });

  /** A QMP-like server: greets (unless silent) and answers each command via `answer`. */
  async function serve(answer: (cmd: string) => string | null, greet = true): Promise<string> {
    dir = mkdtempSync(join(tmpdir(), "qmp-test-"));
    const path = join(dir, "qmp.sock");
    server = createServer((c) => {
      if (greet) c.write('{"QMP": {"version": {}, "capabilities": []}}\n');
      let buf = "";
      c.on("data", (d) => {
        buf += d.toString();
        for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
          const cmd = JSON.parse(buf.slice(0, nl)).execute as string;
          buf = buf.slice(nl + 1);
          const reply = cmd === "qmp_capabilities" ? '{"return": {}}' : answer(cmd);
          if (reply) c.write(`${reply}\n`);
        }
      });
    });
    await new Promise<void>((r) => server!.listen(path, r));
    return path;
  }

  test("negotiates, skips events and returns the reply", async () => {
    const path = await serve((cmd) => (cmd === "query-status" ? '{"event": "RESUME"}\n{"return": {"status": "running", "running": true}}' : null));
    expect(await qmpCall(path, "query-status", 1000)).toEqual({ status: "running", running: true });
  });

  test("a QMP error becomes a BangerError naming the class", async () => {
    const path = await serve(() => '{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}');
    await expect(qmpCall(path, "nope", 1000)).rejects.toThrow(/CommandNotFound/);
  });

  test("a server that never greets times out instead of hanging", async () => {
    const path = await serve(() => null, false);
    const t0 = Date.now();
    await expect(QmpClient.open(path, 150)).rejects.toMatchObject({ code: "timeout" });
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  test("a command without a reply times out", async () => {
    const quiet = await serve(() => null);
    await expect(qmpCall(quiet, "system_powerdown", 150)).rejects.toMatchObject({ code: "timeout" });
  });

  test("a missing socket is unavailable", async () => {
    dir = mkdtempSync(join(tmpdir(), "qmp-test-"));
    await expect(qmpCall(join(dir, "none.sock"), "query-status", 500)).rejects.toMatchObject({ code: "unavailable" });
  });
});

describe("QemuDriver.start failures leave nothing behind", () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const planIn = (d: string): BootPlan => ({
    ...plan,
    dir: d,
    nic: undefined,
    consoleLog: join(d, "console.log"),
    vmmLog: join(d, "vmm.log"),
    memoryFile: join(d, "ram"),
  });
  const quiet = { accel: "tcg" as const, warn: () => {}, hasVhostVsock: () => false };

  test("a missing QEMU binary is not_available", async () => {
    dir = mkdtempSync(join(tmpdir(), "qemu-start-"));
    const driver = new QemuDriver({ ...quiet, bin: join(dir, "no-such-qemu") });
    await expect(driver.start(planIn(dir))).rejects.toMatchObject({ code: "not_available" });
  });

  test("a QEMU that exits during start-up fails with its last log lines", async () => {
    dir = mkdtempSync(join(tmpdir(), "qemu-start-"));
    const fake = join(dir, "fake-qemu");
    writeFileSync(fake, "#!/bin/sh\necho 'qemu-system-x86_64: -drive id=disk-base: Could not open' >&2\nexit 1\n", { mode: 0o755 });
    const driver = new QemuDriver({ ...quiet, bin: fake });
    await expect(driver.start(planIn(dir))).rejects.toThrow(/Could not open/);
    expect(existsSync(join(dir, "qmp.sock"))).toBe(false);
  });
});
