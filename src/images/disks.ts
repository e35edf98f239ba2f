/**
 * Per-VM disks. The attach order is a contract shared by every driver and the boot glue:
 *   /dev/vda  the image's base rootfs ext4, READ-ONLY, shared by all VMs of that image
 *   /dev/vdb  per-VM overlay ext4 (overlayfs upper+work dirs), sparse, kept across stop/start
 *   /dev/vdc  per-VM work disk ext4, mounted at /root, cloned from the image's work seed
 *   /dev/vdd  per-VM config drive ext4, read-only, rebuilt at every start (config-drive.ts)
 * Everything here is rootless: sparse files, mkfs.ext4/resize2fs on files, no loop devices.
 */
import { existsSync } from "node:fs";
import { mkdir, rm, stat, truncate } from "node:fs/promises";
import { dirname } from "node:path";
import { BangerError } from "../errors.ts";
import type { Runner } from "../host/runner.ts";

export interface DiskDeps {
  runner: Runner;
}

const MiB = 1024 * 1024;
/** The smallest work disk or overlay banger makes; below this ext4 + journal leaves no room. */
export const MIN_DISK_BYTES = 64 * MiB;
/** The default overlay size: apparent only, the file stays sparse until the guest writes. */
export const DEFAULT_OVERLAY_BYTES = 8 * 1024 * MiB;

// 4 KiB blocks and the "default" usage type even for a small seed, so a seed grown to
// hundreds of GiB keeps sane block and inode ratios; lazy init keeps mkfs and resize2fs
// from writing inode tables, which is what keeps creation constant-time and sparse.
const MKFS_ARGS = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-T", "default", "-E", "lazy_itable_init=1,lazy_journal_init=1"];

/** The mkfs.ext4 argv banger uses for a disk at `path` (optionally filled from `dir`). */
export function mkfsArgv(path: string, label: string, dir?: string, extra: string[] = []): string[] {
  return [...MKFS_ARGS, ...extra, "-L", label, ...(dir ? ["-d", dir] : []), path];
}

function checkSize(what: string, sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < MIN_DISK_BYTES) {
    throw new BangerError("invalid_argument", `${what} size ${sizeBytes} bytes is below the minimum of ${MIN_DISK_BYTES / MiB} MiB`, {
      hint: "Ask for a larger disk, e.g. --disk 8G",
    });
  }
}

export async function refuseExisting(path: string, what: string): Promise<void> {
  if (existsSync(path)) {
    throw new BangerError("already_exists", `${what} ${path} already exists`, {
      hint: "It holds the VM's data; delete the VM to start over",
    });
  }
  await mkdir(dirname(path), { recursive: true });
}

/** Creates the per-VM overlay disk (/dev/vdb): a sparse file with an empty ext4. */
export async function createOverlayDisk(path: string, sizeBytes: number, deps: DiskDeps): Promise<void> {
  checkSize("overlay disk", sizeBytes);
  await refuseExisting(path, "overlay disk");
  try {
    await Bun.write(path, "");
    await truncate(path, sizeBytes);
    await deps.runner.run(mkfsArgv(path, "banger-overlay"));
  } catch (err) {
    await rm(path, { force: true });
    throw err;
  }
}

/** Makes the per-VM work disk (/dev/vdc): a sparse clone of the image's seed, grown in constant time. */
export async function createWorkDisk(opts: { seed: string; path: string; sizeBytes: number }, deps: DiskDeps): Promise<void> {
  checkSize("work disk", opts.sizeBytes);
  const seedSize = (await stat(opts.seed).catch(() => null))?.size;
  if (seedSize === undefined) {
    throw new BangerError("not_found", `work seed ${opts.seed} is missing`, { hint: "Rebuild or re-pull the image" });
  }
  if (opts.sizeBytes < seedSize) {
    throw new BangerError("invalid_argument", `work disk size ${opts.sizeBytes} is smaller than the image's work seed (${seedSize} bytes)`, {
      hint: "Ask for a larger --disk",
    });
  }
  await refuseExisting(opts.path, "work disk");
  try {
    // reflink where the filesystem can (btrfs/xfs), else a sparse copy: both skip the holes.
    await deps.runner.run(["cp", "--reflink=auto", "--sparse=always", opts.seed, opts.path]);
    if (opts.sizeBytes > seedSize) await resizeExt4(opts.path, opts.sizeBytes, false, deps);
    await dropLostFound(opts.path, deps);
  } catch (err) {
    await rm(opts.path, { force: true });
    throw err;
  }
}

/** Grows a stopped VM's work disk; shrinking is refused because it would lose data. */
export async function growWorkDisk(path: string, newSizeBytes: number, deps: DiskDeps): Promise<"grown" | "unchanged"> {
  const current = (await stat(path).catch(() => null))?.size;
  if (current === undefined) {
    throw new BangerError("not_found", `work disk ${path} is missing`, { hint: "The VM's files are gone; delete and recreate it" });
  }
  if (newSizeBytes < current) {
    throw new BangerError("invalid_argument", `work disks only grow: ${newSizeBytes} bytes is smaller than the current ${current} bytes`, {
      hint: `Pass a size of at least ${Math.ceil(current / MiB)}M`,
    });
  }
  if (newSizeBytes === current) return "unchanged";
  await resizeExt4(path, newSizeBytes, true, deps);
  return "grown";
}

async function resizeExt4(path: string, sizeBytes: number, wasMounted: boolean, deps: DiskDeps): Promise<void> {
  if (wasMounted) {
    // resize2fs insists on a fresh check after the guest mounted it; exit 1 = fixed, still fine.
    const r = await deps.runner.run(["e2fsck", "-f", "-y", path], { allowFailure: true });
    if (r.code > 1) {
      throw new BangerError("failed_precondition", `e2fsck found errors it could not fix on ${path} (exit ${r.code})`, {
        hint: `Inspect it with: e2fsck -f ${path}`,
      });
    }
  }
  await truncate(path, sizeBytes);
  await deps.runner.run(["resize2fs", path]);
  // e2fsck -f makes lost+found again.
  if (wasMounted) await dropLostFound(path, deps);
}

/**
 * The work disk is mounted at /root, a home directory: no lost+found there. debugfs removes
 * it only while empty (after a repair put files in it, it stays); e2fsck -f makes it again.
 */
async function dropLostFound(path: string, deps: DiskDeps): Promise<void> {
  await deps.runner.run(["debugfs", "-w", "-R", "rmdir lost+found", path], { allowFailure: true });
}

/** Makes an image's work seed: a small ext4 holding the image's /root (taken from `srcDir`). */
export async function makeWorkSeed(opts: { srcDir: string; path: string; sizeBytes?: number }, deps: DiskDeps): Promise<number> {
  const size = opts.sizeBytes ?? MIN_DISK_BYTES;
  await mkdir(dirname(opts.path), { recursive: true });
  await rm(opts.path, { force: true });
  await Bun.write(opts.path, "");
  await truncate(opts.path, size);
  await deps.runner.run(mkfsArgv(opts.path, "banger-work", opts.srcDir));
  return size;
}

/** Bytes a file really occupies on the host (sparse files occupy less than their size). */
export async function allocatedBytes(path: string): Promise<number> {
  return (await stat(path)).blocks * 512;
}
