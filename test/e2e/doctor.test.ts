import { afterAll, expect } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import * as v from "valibot";
import { hardwareVirtUsable } from "../../src/host/doctor.ts";
import { bangerBin, TestHome } from "../../src/testing/cli.ts";
import { testNeeds } from "../../src/testing/skip.ts";

const h = new TestHome();
afterAll(() => h.cleanup());
const built: Array<[boolean, string]> = [[existsSync(bangerBin), "dist/banger not built"]];

const reportSchema = v.strictObject({
  checks: v.pipe(
    v.array(v.strictObject({ name: v.string(), status: v.picklist(["pass", "warn", "fail"]), detail: v.string(), fix: v.optional(v.string()) })),
    v.minLength(10),
  ),
  accel: v.picklist(["kvm", "tcg"]),
  summary: v.strictObject({ pass: v.number(), warn: v.number(), fail: v.number() }),
});

testNeeds("doctor --json matches its schema, covers every check, and reports this host's accel", built, async () => {
  const r = await h.run(["doctor", "--json"]);
  const report = v.parse(reportSchema, JSON.parse(r.stdout));
  const names = report.checks.map((c) => c.name);
  for (const n of [
    "config",
    "kvm",
    "firecracker",
    "qemu",
    "vhost-vsock",
    "tun",
    "bridge/NAT",
    "nftables",
    "e2fsprogs",
    "mmdebstrap",
    "ssh",
    "disk space",
    "default kernel",
    "default image",
    "daemon",
    "dns port",
  ]) {
    expect(names).toContain(n);
  }
  for (const c of report.checks) if (c.status !== "pass") expect(c.fix).toBeTruthy();
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const expected = hardwareVirtUsable(cpuinfo, existsSync("/dev/kvm")) ? "kvm" : "tcg";
  expect(report.accel).toBe(expected);
  if (!/\b(vmx|svm)\b/.test(cpuinfo)) expect(report.accel).toBe("tcg");
  expect(r.code).toBe(report.summary.fail > 0 ? 1 : 0);
});

testNeeds("doctor opens the store read-only: with no database it creates none and starts no daemon", built, async () => {
  await h.run(["doctor"]);
  expect(existsSync(h.paths.dbFile)).toBe(false);
  expect(existsSync(h.paths.socket)).toBe(false);
});
