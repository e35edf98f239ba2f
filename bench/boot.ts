/**
 * Real-guest boot under QEMU (TCG here): `vm create` to ready against the floor, which is
 * the very QEMU command line banger ran, started by hand on fresh copies of the same disks
 * and timed until an SSH login with banger's key succeeds. Both are first boots of the
 * same kernel, image, drives, TAP and MAC, in the same run.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitForSsh } from "../src/host/ssh.ts";
import { hostRunner } from "../src/host/runner.ts";
import { vmPaths } from "../src/host/paths.ts";
import { createOverlayDisk, createWorkDisk, DEFAULT_OVERLAY_BYTES } from "../src/images/disks.ts";
import { realHome, type RealHome } from "../src/testing/real-env.ts";
import { createVm } from "./fake-home.ts";
import { type BenchCtx, fmtMs, heading, percentile, timed } from "./lib.ts";

interface ShownVm {
  id: string;
  ip: string;
  disk_bytes: number;
  image: string;
  pid: number | null;
  dir: string;
}

async function showVm(home: RealHome, name: string): Promise<ShownVm> {
  const r = await home.run(["vm", "show", name, "--json"]);
  if (r.code !== 0) throw new Error(`vm show ${name} failed: ${r.stderr}`);
  const body = JSON.parse(r.stdout);
  return body as ShownVm;
}

async function run(home: RealHome, args: string[]): Promise<void> {
  const r = await home.run(args);
  if (r.code !== 0) throw new Error(`banger ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
}

/** The VM's QEMU argv, read from /proc while it runs. */
function qemuArgv(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0$/, "").split("\0");
}

/**
 * Boots banger's own QEMU argv with every per-VM file moved to a scratch dir holding fresh
 * disks (empty overlay, work disk from the seed, the same config drive): a first boot, as
 * create's was. Returns ms from spawn to a successful SSH login.
 */
async function rawBoot(home: RealHome, vm: ShownVm, argv: string[], configCopy: string): Promise<number> {
  const dir = vmPaths(home.paths, vm.id);
  if (dir.dir !== vm.dir) throw new Error(`VM dir ${vm.dir} is not where the bench expects it (${dir.dir})`);
  const scratch = mkdtempSync(join(tmpdir(), "banger-raw-boot-"));
  const seed = JSON.parse((await home.run(["image", "show", vm.image, "--json"])).stdout).work_seed_path as string;
  let proc: ReturnType<typeof Bun.spawn> | null = null;
  try {
    await createOverlayDisk(join(scratch, "overlay.ext4"), DEFAULT_OVERLAY_BYTES, { runner: hostRunner });
    await createWorkDisk({ seed, path: join(scratch, "work.ext4"), sizeBytes: vm.disk_bytes }, { runner: hostRunner });
    copyFileSync(configCopy, join(scratch, "config.ext4"));
    const raw = argv.map((a) => a.replaceAll(dir.dir, scratch));
    const key = readFileSync(home.paths.sshKey, "utf8");
    const hostKey = readFileSync(`${dir.hostKey}.pub`, "utf8").trim();
    const t = performance.now();
    proc = Bun.spawn(raw, { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
    await waitForSsh({ host: vm.ip, user: "root", privateKey: key, knownHostKey: hostKey, timeoutMs: 180_000, intervalMs: 100 });
    return performance.now() - t;
  } finally {
    if (proc) {
      proc.kill("SIGKILL");
      await proc.exited;
    }
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** One iteration: create (timed), capture argv and config drive, stop, raw boot (timed), start (timed), delete. */
async function iteration(home: RealHome, name: string): Promise<{ create: number; raw: number; start: number; steps: Map<string, number> }> {
  const created = await createVm(home, name);
  try {
    const vm = await showVm(home, name);
    if (!vm.pid) throw new Error(`vm show ${name} gave no QEMU pid`);
    const argv = qemuArgv(vm.pid);
    const configCopy = join(home.root, `${name}-config.ext4`);
    copyFileSync(vmPaths(home.paths, vm.id).configDrive, configCopy);
    await run(home, ["vm", "stop", name]);
    const raw = await rawBoot(home, vm, argv, configCopy);
    const start = await timed(() => run(home, ["vm", "start", name]));
    return { create: created.ms, raw, start: start.ms, steps: created.steps };
  } finally {
    await home.run(["vm", "delete", "--force", name]);
  }
}

/** `vm create` → ready versus the raw boot of the same argv to an SSH login; `runs` iterations. */
export async function benchBoot(ctx: BenchCtx, runs: number): Promise<void> {
  heading(`real guest under QEMU (${ctx.machine.accel}): vm create -> ready vs the same QEMU argv -> SSH login, ${runs} run(s)`, ctx.machine);
  const home = await realHome({ taps: 2 });
  try {
    const creates: number[] = [];
    const raws: number[] = [];
    const starts: number[] = [];
    for (let i = 0; i < runs; i++) {
      const r = await iteration(home, `boot${i}`);
      creates.push(r.create);
      raws.push(r.raw);
      starts.push(r.start);
      const steps = [...r.steps].map(([s, ms]) => `${s} ${fmtMs(ms)}`).join(", ");
      console.log(`   run ${i + 1}: create ${fmtMs(r.create)} (${steps}); raw QEMU -> SSH ${fmtMs(r.raw)}; vm start ${fmtMs(r.start)}`);
    }
    const create = percentile(creates, 50);
    const raw = percentile(raws, 50);
    ctx.summary.add({
      bench: `boot (${ctx.machine.accel})`,
      metric: `vm create -> ready, p50 of ${runs}`,
      value: fmtMs(create),
      baseline: `${fmtMs(raw)} raw QEMU -> SSH`,
      ratio: create / raw,
    });
    ctx.summary.add({
      bench: `boot (${ctx.machine.accel})`,
      metric: `vm start (stopped VM) -> ready, p50 of ${runs}`,
      value: fmtMs(percentile(starts, 50)),
      baseline: `${fmtMs(raw)} raw QEMU -> SSH`,
      ratio: percentile(starts, 50) / raw,
    });
  } finally {
    await home.teardownNet();
    await home.cleanup();
  }
}
