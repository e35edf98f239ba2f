import { dlopen, FFIType } from "bun:ffi";
import { closeSync, openSync } from "node:fs";

const LOCK_EX = 2;
const LOCK_NB = 4;

let libc: { symbols: { flock(fd: number, op: number): number } } | null = null;
function lib() {
  libc ??= dlopen("libc.so.6", { flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 } }) as never;
  return libc!;
}

/** An exclusive advisory lock on a file; the kernel releases it when the process dies, so it can never go stale. */
export class FileLock {
  private constructor(private fd: number) {}

  /** Takes the lock without waiting; null when another process holds it. */
  static tryAcquire(path: string): FileLock | null {
    const fd = openSync(path, "a", 0o600);
    if (lib().symbols.flock(fd, LOCK_EX | LOCK_NB) === 0) return new FileLock(fd);
    closeSync(fd);
    return null;
  }

  /** Waits (polling) up to timeoutMs for the lock. */
  static async acquire(path: string, timeoutMs: number): Promise<FileLock | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const lock = FileLock.tryAcquire(path);
      if (lock || Date.now() > deadline) return lock;
      await Bun.sleep(15);
    }
  }

  release() {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}
