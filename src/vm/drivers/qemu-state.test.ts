import { describe, expect, test } from "bun:test";
import { buildQemuArgv } from "./qemu.ts";
import { parseQemuVersion, qemuRestoreProblem, shellQuote } from "./qemu-state.ts";
import type { BootPlan } from "./types.ts";

const plan: BootPlan = {
  vmId: "vm1",
  dir: "/s/vm1",
  kernelPath: "/k",
  extraBootArgs: "",
  drives: [{ id: "root", path: "/r", readOnly: true }],
  cpus: 1,
  memoryMib: 512,
  cid: 3,
  consoleLog: "/s/vm1/c.log",
  vmmLog: "/s/vm1/v.log",
  memoryFile: "/s/vm1/ram,x",
};
const meta = { vmm: "qemu" as const, version: "7.2.11", accel: "tcg", savedAt: "2026-01-01T00:00:00Z" };

describe("QEMU saved state", () => {
  test("guest RAM is a shared file in the VM directory; a restore waits for incoming state", () => {
    const argv = buildQemuArgv(plan, { bin: "qemu", accel: "tcg", vhostVsock: false });
    expect(argv[argv.indexOf("-M") + 1]).toEndWith(",memory-backend=mem");
    expect(argv[argv.indexOf("-object") + 1]).toBe("memory-backend-file,id=mem,mem-path=/s/vm1/ram,,x,size=512M,share=on");
    expect(argv).not.toContain("-incoming");
    const restore = buildQemuArgv(plan, { bin: "qemu", accel: "tcg", vhostVsock: false, incoming: true, privateMemory: true });
    expect(restore.slice(-2)).toEqual(["-incoming", "defer"]);
    expect(restore[restore.indexOf("-object") + 1]).toEndWith("share=off");
  });

  test("the version comes from --version; a state from another version or accelerator is refused", () => {
    expect(parseQemuVersion("QEMU emulator version 7.2.11 (Debian 1:7.2+dfsg-7+deb12u7)\n")).toBe("7.2.11");
    expect(parseQemuVersion("garbage")).toBeNull();
    expect(qemuRestoreProblem(meta, "7.2.11", "tcg")).toBeNull();
    expect(qemuRestoreProblem(meta, "8.0.0", "tcg")).toBe("the saved state was written by QEMU 7.2.11 and this host runs QEMU 8.0.0");
    expect(qemuRestoreProblem(meta, "7.2.11", "kvm")).toBe("the saved state was written under tcg and this host would run the VM under kvm");
    expect(qemuRestoreProblem({ ...meta, vmm: "firecracker" }, "7.2.11", "tcg")).toContain("written by firecracker");
  });

  test("exec: paths are quoted for the shell", () => {
    expect(shellQuote("/a b/it's")).toBe(`'/a b/it'\\''s'`);
  });
});
