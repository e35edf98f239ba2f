/**
 * Keeps each VM's console.log bounded. The VMMs write the console themselves (Firecracker's
 * stdout, QEMU's file chardev), both appending (O_APPEND), and they outlive the daemon, so
 * the daemon does not sit in the data path: it watches the file and, once it passes half of
 * console_log_max, copies its last console_log_max bytes to console.log.1 and truncates it
 * in place; the VMM's next write lands at the new start. The half left is headroom for what
 * arrives before the daemon notices. While no daemon runs nothing is
 * watched; the next daemon rotates at start.
 */
import { closeSync, openSync, readSync, statSync, truncateSync, watch, writeFileSync, type FSWatcher } from "node:fs";

/** Size past which a console log is rotated, for a cap of `max` bytes. */
export function rotateAt(max: number): number {
  return Math.floor(max / 2);
}

/** Rotates `path` to `path.1` (its last `max` bytes) and empties it when it is past rotateAt(max); true when it did. */
export function rotateIfOver(path: string, max: number): boolean {
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    return false;
  }
  if (size <= rotateAt(max)) return false;
  const keep = Math.min(size, max);
  const buf = Buffer.alloc(keep);
  const fd = openSync(path, "r");
  try {
    readSync(fd, buf, 0, keep, size - keep);
  } finally {
    closeSync(fd);
  }
  writeFileSync(`${path}.1`, buf, { mode: 0o600 });
  truncateSync(path, 0);
  return true;
}

/** Most often one console is checked while its guest writes (a flood fires many events). */
const CHECK_EVERY_MS = 5;

/** Watches the console logs of running VMs and rotates each as it passes its cap. */
export class ConsoleCap {
  private readonly watched = new Map<string, { path: string; watcher: FSWatcher; timer: ReturnType<typeof setTimeout> | null; checkedAt: number }>();

  constructor(
    private readonly max: number,
    private readonly log: (line: string) => void = () => {},
  ) {}

  /** Makes the watched set exactly `consoles` (VM id → console.log path), checking each new one at once. */
  track(consoles: Map<string, string>): void {
    for (const [id, w] of this.watched) if (consoles.get(id) !== w.path) this.untrack(id);
    for (const [id, path] of consoles) if (!this.watched.has(id)) this.watch(id, path);
  }

  /** Stops every watcher. */
  close(): void {
    for (const id of [...this.watched.keys()]) this.untrack(id);
  }

  private watch(id: string, path: string): void {
    this.check(path);
    let watcher: FSWatcher;
    try {
      // A rename is the file deleted or replaced (a VM restarted): drop it; the next poll watches the new one.
      watcher = watch(path, (event) => (event === "rename" ? this.untrack(id) : this.schedule(id)));
    } catch {
      return; // no console yet; the next poll tries again
    }
    watcher.on("error", () => this.untrack(id));
    this.watched.set(id, { path, watcher, timer: null, checkedAt: 0 });
  }

  /** Checks at once unless it just did; then once more when the interval is over, so the last write is seen. */
  private schedule(id: string): void {
    const w = this.watched.get(id);
    if (!w || w.timer) return;
    const wait = w.checkedAt + CHECK_EVERY_MS - performance.now();
    const run = () => {
      w.timer = null;
      w.checkedAt = performance.now();
      this.check(w.path);
    };
    if (wait <= 0) run();
    else w.timer = setTimeout(run, wait);
  }

  private check(path: string): void {
    try {
      if (rotateIfOver(path, this.max)) this.log(`rotated ${path} to ${path}.1 (console_log_max ${this.max} bytes)`);
    } catch (err) {
      this.log(`could not rotate ${path}: ${(err as Error).message}`);
    }
  }

  private untrack(id: string): void {
    const w = this.watched.get(id);
    if (!w) return;
    if (w.timer) clearTimeout(w.timer);
    w.watcher.close();
    this.watched.delete(id);
  }
}
