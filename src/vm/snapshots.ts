/**
 * Named snapshots of one VM, kept in `<vm dir>/snapshots/<name>/`: its overlay and work disks
 * always (sparse copies, clones where the filesystem has reflink), and with `--memory` its
 * memory and device state too, so a restore puts the VM back at that very moment.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { allocatedBytes } from "../images/disks.ts";
import type { VmPaths } from "../host/paths.ts";
import type { VmRow } from "../store/vms.ts";
import { sparseCopy } from "./drivers/qemu.ts";
import type { Runtime, VmServiceDeps } from "./deps.ts";
import { discardSavedState, liveHandle } from "./instant.ts";
import { dirOf, stopVmm } from "./start-stop.ts";
import { onFullDisk } from "./no-space.ts";

/** What `vm snapshot list` shows for one snapshot. */
export interface SnapshotInfo {
  name: string;
  created_at: string;
  memory: boolean;
  /** Bytes the snapshot's files take on disk (allocated blocks). */
  size_bytes: number;
}

const PARTIAL = ".partial-";

/** Removes snapshots a crash left unfinished (their directory never got its final name). */
export function sweepPartialSnapshots(dir: VmPaths) {
  if (!existsSync(dir.snapshotsDir)) return;
  for (const name of readdirSync(dir.snapshotsDir)) if (name.startsWith(PARTIAL)) rmSync(snapshotDir(dir, name), { recursive: true, force: true });
}

function snapshotDir(dir: VmPaths, name: string) {
  return join(dir.snapshotsDir, name);
}

/** The file names inside a snapshot directory. */
export function snapshotFiles(sdir: string) {
  return {
    info: join(sdir, "snapshot.json"),
    overlay: join(sdir, "overlay.ext4"),
    work: join(sdir, "work.ext4"),
    state: join(sdir, "vmstate"),
    memory: join(sdir, "ram"),
    meta: join(sdir, "vmstate.json"),
  };
}

/** A default name from the time: s-20260102-150405. */
export function defaultSnapshotName(now = new Date()): string {
  return `s-${now.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15)}`;
}

/** Copies the VM's disks (and saved memory) into a new snapshot; a running VM is paused meanwhile. */
export async function createSnapshot(deps: VmServiceDeps, rt: Runtime, vm: VmRow, name: string, memory: boolean): Promise<string> {
  const dir = dirOf(deps, vm.id);
  const final = snapshotDir(dir, name);
  if (existsSync(final))
    throw new BangerError("already_exists", `VM ${vm.name} already has a snapshot "${name}"`, {
      hint: `Delete it first (banger vm snapshot delete ${vm.name} ${name}) or pick another name.`,
    });
  const live = vm.state === "running" || vm.state === "paused";
  if (memory && !live && vm.state !== "suspended") {
    throw new BangerError("failed_precondition", `VM ${vm.name} is ${vm.state}; a --memory snapshot needs a running, paused or suspended VM`, {
      hint: "Leave out --memory for a disk-only snapshot.",
    });
  }
  const tmp = snapshotDir(dir, `${PARTIAL}${name}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true, mode: 0o700 });
  const t0 = performance.now();
  try {
    await onFullDisk("snapshot", tmp, deps.paths.vmsDir, () =>
      live ? snapshotLive(deps, rt, vm, dir, tmp, memory) : copyAtRest(dir, tmp, memory && vm.state === "suspended"),
    );
    writeFileSync(snapshotFiles(tmp).info, JSON.stringify({ name, created_at: new Date().toISOString(), memory }, null, 2));
    renameSync(tmp, final);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  return `snapshot ${name} taken (${memory ? "disks and memory" : "disks"}, ${Math.round(performance.now() - t0)} ms)`;
}

/** A running VM: vCPUs stopped while the disks (and memory) are copied, then running again as before. */
async function snapshotLive(deps: VmServiceDeps, rt: Runtime, vm: VmRow, dir: VmPaths, sdir: string, memory: boolean) {
  const driver = deps.drivers(vm.vmm);
  const handle = liveHandle(rt, deps, vm);
  const f = snapshotFiles(sdir);
  try {
    if (memory) writeFileSync(f.meta, JSON.stringify(await driver.snapshot(handle, { state: f.state, memory: f.memory }, dir.memory), null, 2));
    else await driver.pause(handle);
    await copyDisks(dir, sdir);
  } finally {
    if (vm.state === "running") await driver.resume(handle);
  }
}

/** A stopped or suspended VM: plain copies (a suspended one's saved memory with --memory). */
async function copyAtRest(dir: VmPaths, sdir: string, memory: boolean) {
  await copyDisks(dir, sdir);
  if (!memory) return;
  const f = snapshotFiles(sdir);
  await sparseCopy(dir.savedState, f.state);
  await sparseCopy(dir.memory, f.memory);
  await sparseCopy(dir.savedMeta, f.meta);
}

async function copyDisks(dir: VmPaths, sdir: string) {
  const f = snapshotFiles(sdir);
  await sparseCopy(dir.overlay, f.overlay);
  await sparseCopy(dir.workDisk, f.work);
}

/** The VM's snapshots, oldest first (unfinished ones from a crash are swept on the way). */
export async function listSnapshots(deps: VmServiceDeps, vm: VmRow): Promise<SnapshotInfo[]> {
  const dir = dirOf(deps, vm.id);
  if (!existsSync(dir.snapshotsDir)) return [];
  const out: SnapshotInfo[] = [];
  for (const name of readdirSync(dir.snapshotsDir)) {
    const sdir = snapshotDir(dir, name);
    if (name.startsWith(PARTIAL)) {
      rmSync(sdir, { recursive: true, force: true });
      continue;
    }
    try {
      const info = JSON.parse(readFileSync(snapshotFiles(sdir).info, "utf8")) as Omit<SnapshotInfo, "size_bytes">;
      let size = 0;
      for (const f of readdirSync(sdir)) size += await allocatedBytes(join(sdir, f));
      out.push({ ...info, size_bytes: size });
    } catch {
      // not a snapshot
    }
  }
  return out.sort((a, b) => a.created_at.localeCompare(b.created_at));
}

/** Puts the snapshot's disks (and saved memory) back in the VM directory; the VMM is stopped first. */
export async function restoreSnapshotFiles(deps: VmServiceDeps, rt: Runtime, vm: VmRow, name: string): Promise<{ memory: boolean; wasRunning: boolean }> {
  const dir = dirOf(deps, vm.id);
  const sdir = await findSnapshot(deps, vm, name);
  const info = JSON.parse(readFileSync(snapshotFiles(sdir).info, "utf8")) as { memory: boolean };
  const wasRunning = vm.state === "running" || vm.state === "paused";
  if (wasRunning) await stopVmm(deps, rt, vm, dir, 0);
  discardSavedState(dir);
  const f = snapshotFiles(sdir);
  for (const [from, to] of [
    [f.overlay, dir.overlay],
    [f.work, dir.workDisk],
  ] as const) {
    rmSync(to, { force: true });
    await sparseCopy(from, to);
  }
  if (info.memory) {
    await sparseCopy(f.state, dir.savedState);
    await sparseCopy(f.memory, dir.memory);
    // The metadata last: only a complete saved state is ever restored.
    await sparseCopy(f.meta, dir.savedMeta);
  }
  deps.vms.update(vm.id, { state: info.memory ? "suspended" : "stopped", teardown: {} });
  return { memory: info.memory, wasRunning };
}

async function findSnapshot(deps: VmServiceDeps, vm: VmRow, name: string): Promise<string> {
  const sdir = snapshotDir(dirOf(deps, vm.id), name);
  if (name.startsWith(PARTIAL) || !existsSync(snapshotFiles(sdir).info)) {
    const names = (await listSnapshots(deps, vm)).map((s) => s.name);
    throw new BangerError("not_found", `VM ${vm.name} has no snapshot "${name}"${names.length ? `; it has ${names.join(", ")}` : ""}`, {
      hint: `banger vm snapshot list ${vm.name}`,
    });
  }
  return sdir;
}

/** Removes one snapshot and frees its space. */
export async function deleteSnapshot(deps: VmServiceDeps, vm: VmRow, name: string): Promise<string> {
  rmSync(await findSnapshot(deps, vm, name), { recursive: true, force: true });
  return `snapshot ${name} deleted`;
}
