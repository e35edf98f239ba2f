import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type DoctorDeps, runDoctor } from "./doctor.ts";
import { resolvePaths } from "./paths.ts";
import { RecordingRunner } from "../testing/recording-runner.ts";

const root = mkdtempSync(join(tmpdir(), "banger-doctor-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A host where everything is in place, with per-test overrides of what exists and what opens. */
function host(
  o: {
    cpuFlags?: string;
    missing?: string[];
    unopenable?: string[];
    runtimeDirProblem?: string;
    daemon?: Awaited<ReturnType<DoctorDeps["daemonStatus"]>>;
  } = {},
): DoctorDeps {
  const paths = resolvePaths({ HOME: root, XDG_RUNTIME_DIR: join(root, "run") });
  return {
    paths,
    runner: new RecordingRunner(() => ({ stdout: "some 1.0\n" })),
    readFile: (p) => (p === "/proc/cpuinfo" ? `flags\t\t: fpu ${o.cpuFlags ?? "vmx"} sse2\n` : ""),
    exists: (p) => !(o.missing ?? []).includes(p),
    canOpenRW: (p) => !(o.unopenable ?? []).includes(p),
    which: (b) => `/usr/bin/${b}`,
    daemonStatus: async () => o.daemon ?? null,
    udpPortFree: async () => true,
    freeBytes: () => 100 * 1024 ** 3,
    runtimeDirProblem: () => o.runtimeDirProblem ?? null,
    registered: () => ({ kernel: false, image: false }),
  };
}

const check = async (deps: DoctorDeps, name: string) => (await runDoctor(deps)).checks.find((c) => c.name === name)!;

describe("doctor checks against a recorded host", () => {
  test("KVM with vmx and an openable /dev/kvm passes and reports kvm", async () => {
    const r = await runDoctor(host());
    expect(r.accel).toBe("kvm");
    expect(r.checks.find((c) => c.name === "kvm")!.status).toBe("pass");
  });

  test("/dev/kvm without vmx/svm (nested PVM KVM) warns and reports tcg", async () => {
    const r = await runDoctor(host({ cpuFlags: "hypervisor" }));
    expect(r.accel).toBe("tcg");
    expect(r.checks.find((c) => c.name === "kvm")).toMatchObject({ status: "warn", detail: expect.stringContaining("no vmx/svm") });
  });

  test("a /dev/kvm this user cannot open fails with the kvm group fix; without vmx/svm it is only the TCG warning", async () => {
    expect(await check(host({ unopenable: ["/dev/kvm"] }), "kvm")).toMatchObject({ status: "fail", fix: expect.stringContaining("kvm group") });
    expect(await check(host({ unopenable: ["/dev/kvm"], cpuFlags: "hypervisor" }), "kvm")).toMatchObject({
      status: "warn",
      detail: expect.stringContaining("no vmx/svm"),
    });
  });

  test("tun: missing, present but not openable by this user, usable", async () => {
    expect(await check(host({ missing: ["/dev/net/tun"] }), "tun")).toMatchObject({ status: "fail", fix: "sudo modprobe tun" });
    expect(await check(host({ unopenable: ["/dev/net/tun"] }), "tun")).toMatchObject({
      status: "fail",
      fix: expect.stringContaining("chmod 0666 /dev/net/tun"),
    });
    expect((await check(host(), "tun")).status).toBe("pass");
  });

  test("runtime dir: another user's or a symlink fails naming the dir and the fix", async () => {
    const c = await check(host({ runtimeDirProblem: "is owned by uid 65534, not by you (uid 1000)" }), "runtime dir");
    expect(c).toMatchObject({ status: "fail", detail: expect.stringContaining(join(root, "run", "banger")), fix: expect.stringContaining("XDG_RUNTIME_DIR") });
    expect((await check(host(), "runtime dir")).status).toBe("pass");
  });

  test("dns port: a daemon running without its .vm listener fails with the dns_listen fix", async () => {
    const c = await check(
      host({ daemon: { pid: 1, buildId: "x", dnsProblem: { message: "DNS address 127.0.0.1:42069 is already in use by another program" } } }),
      "dns port",
    );
    expect(c.status).toBe("fail");
    expect(c.detail).toContain("already in use");
    expect(c.fix).toContain("dns_listen");
    expect(c.fix).toContain("banger daemon stop");
  });
});
