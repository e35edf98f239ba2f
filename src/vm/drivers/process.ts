import { readFileSync, readdirSync } from "node:fs";

/** A clock seam so waits can be tested without real time. */
export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
};

/** Fields of /proc/<pid>/stat after the command name (which may contain spaces). */
function statFields(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** True when the pid runs and is not a zombie (an exited child not yet reaped counts as gone). */
export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const f = statFields(pid);
  return f !== null && f[0] !== "Z" && f[0] !== "X";
}

/** The process start time in clock ticks since boot (field 22), which tells a recycled pid apart. */
export function startTime(pid: number): string | undefined {
  return statFields(pid)?.[19];
}

/** True when the pid is alive, this user's, and, if known, started at the recorded time. */
export function isSameProcess(pid: number, recordedStart?: string): boolean {
  if (!isAlive(pid) || !isOwnProcess(pid)) return false;
  return recordedStart === undefined || startTime(pid) === recordedStart;
}

/** The process's argv, or null when it is gone or unreadable. */
export function cmdline(pid: number): string[] | null {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return raw ? raw.replace(/\0$/, "").split("\0") : null;
  } catch {
    return null;
  }
}

/**
 * The process's real uid (from /proc/<pid>/status), or null when it is gone. Not the owner of
 * /proc/<pid>: that turns to root for a process that made itself non-dumpable.
 */
export function processUid(pid: number): number | null {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** True when the process belongs to this user: only those may count as our VMMs or daemon. */
export function isOwnProcess(pid: number, uid = process.getuid?.() ?? 0): boolean {
  return processUid(pid) === uid;
}

/** True when the pid is this user's banger daemon (`… daemon run`), so signalling it is safe. */
export function isOwnDaemon(pid: number): boolean {
  if (!isAlive(pid) || !isOwnProcess(pid)) return false;
  const argv = cmdline(pid);
  return argv !== null && argv.length >= 2 && argv.at(-2) === "daemon" && argv.at(-1) === "run";
}

/**
 * Every pid of this user whose argv contains `flag value` as consecutive arguments. Another
 * user's process with the same argv (a decoy) does not count.
 */
export function findByArgs(flag: string, value: string): number[] {
  const found: number[] = [];
  const uid = process.getuid?.() ?? 0;
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const argv = cmdline(Number(name));
    if (!argv) continue;
    const at = argv.indexOf(flag);
    if (at >= 0 && argv[at + 1] === value && isOwnProcess(Number(name), uid)) found.push(Number(name));
  }
  return found;
}

/** Waits up to `ms` for the pid to exit; true when it did. */
export async function waitForExit(pid: number, ms: number, clock: Clock = systemClock, recordedStart?: string): Promise<boolean> {
  const deadline = clock.now() + ms;
  for (;;) {
    if (!isSameProcess(pid, recordedStart)) return true;
    if (clock.now() >= deadline) return false;
    await clock.sleep(10);
  }
}

/** Sends a signal, ignoring a process that is already gone. */
export function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Signals the pid and, when it leads its own process group (spawned detached), everything in that group. */
export function signalGroup(pid: number, sig: NodeJS.Signals): boolean {
  const pgrp = Number(statFields(pid)?.[2]);
  if (pgrp === pid && signal(-pid, sig)) return true;
  return signal(pid, sig);
}

/** When the process started, as an ISO time (from its boot-relative start ticks). */
export function startedAt(pid: number): string {
  const ticks = Number(startTime(pid));
  try {
    const btime = Number(/^btime (\d+)$/m.exec(readFileSync("/proc/stat", "utf8"))?.[1]);
    // USER_HZ is 100 on every Linux ABI banger runs on.
    if (Number.isFinite(ticks) && Number.isFinite(btime)) return new Date((btime + ticks / 100) * 1000).toISOString();
  } catch {
    // fall through to now
  }
  return new Date().toISOString();
}
