import { BangerError } from "../errors.ts";
import { applyNet } from "./net-apply.ts";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { allocatedBytes } from "../images/disks.ts";
import type { VmRow } from "../store/vms.ts";
import { isSameProcess } from "./drivers/process.ts";
import { dirOf, knownHandle, releaseRunning, stopVmm } from "./start-stop.ts";
import { readSavedMeta, reconcileSaved } from "./instant.ts";
import type { VmService } from "./service.ts";
import type { ConsoleCap } from "./console-log.ts";
import type { VmmHandle } from "./drivers/types.ts";
import { dropUnfinishedGoldens } from "./warm.ts";
import { sweepPartialSnapshots } from "./snapshots.ts";
import type { VmPaths } from "../host/paths.ts";

/** The names of the VMs reconcile kept running, stopped, and removed (creates that never finished). */
export interface ReconcileReport {
  kept: string[];
  stopped: string[];
  removed: string[];
}

/**
 * Brings the daemon's view in line with the host after a (re)start: live VMMs are kept
 * (rediscovered by socket and command line), dead ones are torn down and marked stopped,
 * creates that never finished are undone. DNS and NAT follow what is alive.
 */
export async function reconcile(svc: VmService): Promise<ReconcileReport> {
  const { deps } = svc;
  const report: ReconcileReport = { kept: [], stopped: [], removed: [] };
  deps.dns.clear();
  await Promise.all(deps.vms.list().map((vm) => svc.withVm(vm.id, (row) => reconcileRow(svc, row, report))));
  removeLeftovers(svc);
  svc.syncKnownHosts();
  deps.log(`reconciled: kept ${report.kept.join(",") || "-"}; stopped ${report.stopped.join(",") || "-"}; removed ${report.removed.join(",") || "-"}`);
  return report;
}

/** One VM, under its lock: finds its VMM (by socket and command line, else the recorded handle) and settles the row. */
async function reconcileRow(svc: VmService, row: VmRow, report: ReconcileReport): Promise<void> {
  const { deps, rt } = svc;
  const dir = dirOf(deps, row.id);
  if (row.state === "creating") return undoUnfinishedCreate(svc, row, dir, report);
  const found = await deps
    .drivers(row.vmm)
    .rediscover(row.id, dir.dir)
    .catch(() => null);
  const known = knownHandle(rt, row, dir);
  const handle = found ?? (known && isSameProcess(known.pid, known.pidStartTime) ? known : null);
  const saved = await reconcileSaved(deps, rt, row, handle);
  if (saved) return void report[saved].push(row.name);
  if (handle && row.state !== "stopped") return settleLive(svc, row, dir, handle, report);
  if (handle) await stopVmm(deps, rt, row, dir, 0);
  else if (row.state !== "stopped" || Object.keys(row.teardown).length) {
    await stopVmm(deps, rt, row, dir, 0);
    report.stopped.push(row.name);
  }
}

/** A create the crash cut short: its VMM (if any), directory and row go. */
async function undoUnfinishedCreate(svc: VmService, row: VmRow, dir: VmPaths, report: ReconcileReport): Promise<void> {
  const { deps, rt } = svc;
  // A crash between spawning the VMM and recording it leaves it findable only by its command line.
  const orphan = await deps
    .drivers(row.vmm)
    .rediscover(row.id, dir.dir)
    .catch(() => null);
  if (orphan) rt.handles.set(row.id, orphan);
  await stopVmm(deps, rt, row, dir, 0);
  rmSync(dir.dir, { recursive: true, force: true });
  deps.vms.delete(row.id);
  report.removed.push(row.name);
}

/** A live VMM under a VM that should run: kept (thawed unless the user paused it), or, if a restore was cut short, stopped. */
async function settleLive(svc: VmService, row: VmRow, dir: VmPaths, handle: VmmHandle, report: ReconcileReport): Promise<void> {
  const { deps, rt } = svc;
  const vmmState = await deps
    .drivers(row.vmm)
    .state(handle)
    .catch(() => "running" as const);
  if (vmmState === "not-started") {
    // A restore the crash interrupted: the saved state is still there to try again.
    await deps
      .drivers(row.vmm)
      .kill(handle)
      .catch(() => {});
    await releaseRunning(deps, rt, row, dir, handle);
    const back = readSavedMeta(dir) ? "suspended" : "stopped";
    deps.vms.update(row.id, { state: back, teardown: {} });
    return void report.stopped.push(row.name);
  }
  rt.handles.set(row.id, handle);
  deps.dns.set(row.name, row.ip);
  const paused = vmmState === "paused" && !(await thawFrozen(svc, row, handle));
  deps.vms.update(row.id, {
    state: paused ? "paused" : "running",
    teardown: { ...row.teardown, pid: handle.pid, pidStartTime: handle.pidStartTime, controlSocket: handle.controlSocket },
  });
  await applyNet(deps, deps.vms.get(row.id)!).catch((err) => deps.log(`network rules of ${row.name}: ${(err as Error).message}`));
  report.kept.push(row.name);
}

/**
 * A VMM found paused under a VM the user did not pause was frozen by an operation the crash cut
 * short (a fork, a golden for warm start, a snapshot, a restore before its `cont`): it runs on.
 * False when it is the user's pause (or the resume fails), so the VM is shown paused.
 */
async function thawFrozen(svc: VmService, row: VmRow, handle: VmmHandle): Promise<boolean> {
  if (row.state === "paused") return false;
  try {
    await svc.deps.drivers(row.vmm).resume(handle);
    svc.deps.log(`${row.name} was left frozen by an interrupted ${row.state === "running" ? "fork, snapshot or golden copy" : row.state}; resumed`);
    return true;
  } catch (err) {
    svc.deps.log(`${row.name} is frozen and could not be resumed: ${(err as Error).message}`);
    return false;
  }
}

/**
 * What a crash leaves outside the rows: a VM directory no row names (a delete or undo cut short
 * after the row went), a fork's RAM copy half made by a restore, and unfinished goldens.
 */
function removeLeftovers(svc: VmService) {
  const { deps } = svc;
  const rows = new Map(deps.vms.list().map((v) => [v.id, v]));
  const entries = existsSync(deps.paths.vmsDir) ? readdirSync(deps.paths.vmsDir) : [];
  for (const name of entries) {
    const row = rows.get(name);
    if (row) removeStaleFiles(dirOf(deps, name), row.state);
    else {
      rmSync(join(deps.paths.vmsDir, name), { recursive: true, force: true });
      deps.log(`removed ${name} from the VM directory: no VM of that id exists`);
    }
  }
  // Reconcile runs as the daemon starts, so no golden is being written by it: any unfinished one is a crash's.
  for (const key of dropUnfinishedGoldens(deps, { inProgress: new Set() })) deps.log(`warm start: removed the unfinished golden ${key}`);
}

/**
 * In a VM's own directory: a RAM copy a restore was making, unfinished snapshots, and a saved
 * state that only a suspended VM keeps (a restore cut short before its clean-up leaves it behind).
 */
function removeStaleFiles(dir: VmPaths, state: string) {
  rmSync(`${dir.memory}.own`, { force: true });
  sweepPartialSnapshots(dir);
  if (state !== "suspended") for (const f of [dir.savedState, dir.savedMeta]) rmSync(f, { force: true });
}

/** One sample of a running VM's resource use. */
export interface VmStats {
  name: string;
  state: string;
  pid: number | null;
  cpu_percent: number | null;
  rss_bytes: number | null;
  disk_used_bytes: number | null;
  disk_bytes: number;
  uptime_s: number | null;
  sampled_at: string;
}

const TICKS = 100;

function procCpuTicks(pid: number): number | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]);
  } catch {
    return null;
  }
}

function procRss(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Samples stats and notices VMMs that died behind the daemon's back. */
export class StatsPoller {
  private readonly last = new Map<string, { ticks: number; at: number }>();
  readonly latest = new Map<string, VmStats>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private polling = false;

  constructor(
    private readonly svc: VmService,
    private readonly consoles?: ConsoleCap,
  ) {}

  start(intervalMs: number) {
    // A failed round is logged, never left unhandled: that would end the daemon.
    this.timer = setInterval(() => void this.poll().catch((err) => this.svc.deps.log(`stats poll: ${(err as Error).message}`)), intervalMs);
  }

  stop() {
    if (this.timer) clearInterval(this.timer);
  }

  /** The latest sample of each running VM (sampled now when there is none yet); stopped VMs show only their disk size. */
  stats(vms: VmRow[]): Promise<VmStats[]> {
    return Promise.all(
      vms.map(async (vm) =>
        vm.state === "running"
          ? (this.latest.get(vm.id) ?? (await this.sample(vm)))
          : {
              name: vm.name,
              state: vm.state,
              pid: null,
              cpu_percent: null,
              rss_bytes: null,
              disk_used_bytes: null,
              disk_bytes: vm.disk_bytes,
              uptime_s: null,
              sampled_at: new Date().toISOString(),
            },
      ),
    );
  }

  /** One round: dead VMMs are torn down (TAP, NAT, DNS released), live ones sampled. */
  async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      this.trackConsoles();
      for (const vm of this.svc.deps.vms.list()) {
        if (vm.state !== "running") continue;
        if (!this.svc.vmmAlive(vm)) await this.reapDead(vm);
        else this.latest.set(vm.id, await this.sample(vm));
      }
    } finally {
      this.polling = false;
    }
  }

  /** Keeps the console logs of running VMs under their cap (watched between polls). */
  trackConsoles(): void {
    if (!this.consoles) return;
    const running = this.svc.deps.vms.list().filter((vm) => vm.state === "running");
    this.consoles.track(new Map(running.map((vm) => [vm.id, dirOf(this.svc.deps, vm.id).consoleLog])));
  }

  /** A VM deleted while this round waited for its lock (a delete stops the VMM first) needs nothing. */
  private async reapDead(vm: VmRow) {
    if (!this.svc.deps.vms.get(vm.id)) return;
    await this.svc
      .withVm(vm.id, async (row) => {
        if (row.state !== "running" || this.svc.vmmAlive(row)) return;
        this.svc.deps.log(`VMM of ${row.name} exited unexpectedly; releasing its resources`);
        await stopVmm(this.svc.deps, this.svc.rt, row, dirOf(this.svc.deps, row.id), 0);
        this.svc.deps.vms.update(row.id, { last_error: "the VMM exited unexpectedly" });
        this.latest.delete(row.id);
      })
      .catch((err) => {
        if (!(err instanceof BangerError && err.code === "not_found")) throw err;
      });
  }

  async sample(vm: VmRow): Promise<VmStats> {
    const pid = this.svc.rt.handles.get(vm.id)?.pid ?? null;
    const ticks = pid ? procCpuTicks(pid) : null;
    const now = Date.now();
    const prev = this.last.get(vm.id);
    let cpu: number | null = null;
    if (ticks !== null && prev) cpu = Math.round(((ticks - prev.ticks) / TICKS / ((now - prev.at) / 1000)) * 1000) / 10;
    if (ticks !== null) this.last.set(vm.id, { ticks, at: now });
    const disk = await allocatedBytes(dirOf(this.svc.deps, vm.id).workDisk).catch(() => null);
    return {
      name: vm.name,
      state: vm.state,
      pid,
      cpu_percent: cpu,
      rss_bytes: pid ? procRss(pid) : null,
      disk_used_bytes: disk,
      disk_bytes: vm.disk_bytes,
      uptime_s: vm.started_at ? Math.round((now - Date.parse(vm.started_at)) / 1000) : null,
      sampled_at: new Date(now).toISOString(),
    };
  }
}
