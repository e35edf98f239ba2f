import { statfsSync } from "node:fs";
import { dirname } from "node:path";
import { BangerError } from "../errors.ts";

// mkfs, cp and ssh-keygen say it in their stderr; node's fs calls in the errno code.
const NO_SPACE = /No space left on device|ENOSPC|Disk quota exceeded|EDQUOT/;

/** Bytes free to this user on the filesystem holding dir, or null when it cannot be read. */
export function freeBytes(dir: string): number | null {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return null;
  }
}

/**
 * Runs fn, which makes one file of a VM at path under root (the VMs' directory, which outlives
 * the undone VM's own, so the hint's `df` still works). A full filesystem (seen as a tool's stderr
 * or an errno) becomes an error naming the file, the free space and what to do, instead of
 * a raw mkfs command line; anything else is rethrown unchanged.
 */
export async function onFullDisk<T>(what: string, path: string, root: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const text = `${(err as Error)?.message ?? err} ${(err as NodeJS.ErrnoException)?.code ?? ""}`;
    if (!NO_SPACE.test(text)) throw err;
    const free = freeBytes(dirname(path)) ?? freeBytes(root);
    const freeText = free === null ? "" : `; only ${(free / (1024 * 1024)).toFixed(1)} MiB free there`;
    throw new BangerError("failed_precondition", `no space left on device while making the ${what} ${path}${freeText}`, {
      hint: `Free space on the filesystem holding ${root} (see \`df -h ${root}\`), then retry.`,
      cause: err,
    });
  }
}
