import { closeSync, fstatSync, lstatSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { BangerError } from "../errors.ts";
import type { Paths } from "../host/paths.ts";
import { prepareRuntimeDir } from "../rpc/socket-trust.ts";
import type { DaemonStatus } from "../rpc/results.ts";
import { LOCK_HELD_LINE, selfArgv } from "../self.ts";
import { isAlive as pidAlive, isOwnDaemon } from "../vm/drivers/process.ts";
import { call, DaemonUnreachable } from "../rpc/client.ts";
import { BUILD_ID } from "../version.ts";

const READY_TIMEOUT_MS = 15_000;

/** Returns the status of a daemon of this build, starting (or replacing an idle other-build) daemon as needed. */
export async function ensureDaemon(paths: Paths, warn: (msg: string) => void): Promise<DaemonStatus> {
  const first = await tryStatus(paths);
  if (first && first.buildId === BUILD_ID) return first;
  if (first && first.busy > 0) {
    warn(`banger: the running daemon is from another build (${first.buildId}) and busy; using it. Run \`banger daemon stop\` when it is idle.`);
    return first;
  }
  prepareRuntimeDir(paths);
  // Loaded only on this path (no daemon of this build answers): the lock uses bun:ffi.
  const { FileLock } = await import("../host/flock.ts");
  const lock = await FileLock.acquire(paths.spawnLock, READY_TIMEOUT_MS);
  if (!lock) throw new BangerError("timeout", "timed out waiting for another banger to start the daemon", { hint: `See ${paths.daemonLog}.` });
  try {
    const now = await tryStatus(paths);
    if (now && now.buildId === BUILD_ID) return now;
    if (now) await replaceDaemon(paths, now, warn);
    return await spawnDaemon(paths);
  } finally {
    lock.release();
  }
}

/** Asks the daemon for its status; null when nothing answers. */
export async function tryStatus(paths: Paths): Promise<DaemonStatus | null> {
  if (!socketPresent(paths.socket)) return null;
  try {
    return await call<DaemonStatus>(paths.socket, "daemon.status", {}, { buildId: BUILD_ID, signal: AbortSignal.timeout(5000) });
  } catch (err) {
    if (err instanceof DaemonUnreachable || (err instanceof BangerError && err.code === "cancelled")) return null;
    throw err;
  }
}

async function replaceDaemon(paths: Paths, old: DaemonStatus, warn: (msg: string) => void) {
  warn(`banger: replacing the idle daemon from build ${old.buildId} (pid ${old.pid}) with this build (${BUILD_ID}).`);
  await call(paths.socket, "daemon.stop", {}, { buildId: BUILD_ID }).catch(() => {});
  await waitForExit(old.pid, 10_000);
}

/** True when something (even a dangling symlink) sits at the socket path; the trust check comes at connect. */
function socketPresent(socket: string): boolean {
  try {
    lstatSync(socket);
    return true;
  } catch {
    return false;
  }
}

/**
 * Waits until the daemon's pid is gone, then kills it if it is still there. A pid that is not
 * this user's banger daemon (whatever answered named it) is never waited for or signalled.
 */
export async function waitForExit(pid: number, timeoutMs: number): Promise<"exited" | "killed" | "not ours"> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!pidAlive(pid)) return "exited";
    if (!isOwnDaemon(pid)) return "not ours";
    await Bun.sleep(20);
  }
  try {
    process.kill(pid, "SIGKILL");
  } catch {}
  return "killed";
}

async function spawnDaemon(paths: Paths): Promise<DaemonStatus> {
  mkdirSync(dirname(paths.daemonLog), { recursive: true, mode: 0o700 });
  const logFd = openSync(paths.daemonLog, "a", 0o600);
  // Only this run's lines explain its exit; the log may hold older daemons' output.
  const logStart = fstatSync(logFd).size;
  const { spawn } = await import("node:child_process");
  const child = spawn(selfArgv()[0]!, [...selfArgv().slice(1), "daemon", "run"], {
    detached: true,
    stdio: ["ignore", logFd, logFd],
    env: process.env,
  });
  closeSync(logFd);
  let exited: number | null = null;
  child.on("exit", (code) => (exited = code ?? 1));
  child.unref();
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const status = await tryStatus(paths);
    if (status && status.buildId === BUILD_ID) return status;
    // A daemon that found the lock taken means one is already running (it was too busy to answer
    // the status call in time): keep asking it rather than failing the command.
    if (exited !== null && !status && !lostLockRace(paths, logStart)) throw startupFailure(paths, logStart, exited);
    await Bun.sleep(exited === null ? 15 : 50);
  }
  throw new BangerError("timeout", `the daemon did not become ready within ${READY_TIMEOUT_MS / 1000}s`, { hint: `See ${paths.daemonLog}.` });
}

/** Whether the daemon this run spawned exited because another daemon holds the lock. */
export function lostLockRace(paths: Pick<Paths, "daemonLog">, logStart: number): boolean {
  try {
    return readFileSync(paths.daemonLog).subarray(logStart).toString("utf8").includes(LOCK_HELD_LINE);
  } catch {
    return false;
  }
}

/**
 * Why a daemon died before answering: its own error and hint (what `banger:`/`hint:` lines it
 * wrote to the log during this run), so the user reads e.g. the taken dns_listen address, not a log tail.
 */
export function startupFailure(paths: Paths, logStart: number, exitCode: number): BangerError {
  let lines: string[] = [];
  try {
    lines = readFileSync(paths.daemonLog).subarray(logStart).toString("utf8").trim().split("\n").filter(Boolean);
  } catch {}
  const error = lines.findLast((l) => l.startsWith("banger: "))?.slice("banger: ".length);
  const hint = lines.findLast((l) => l.startsWith("hint: "))?.slice("hint: ".length);
  const seeLog = `See ${paths.daemonLog}.`;
  if (error) return new BangerError("unavailable", `the daemon could not start: ${error}`, { hint: hint ? `${hint.replace(/\.$/, "")}. ${seeLog}` : seeLog });
  const tail = lines.slice(-3).join(" | ") || "nothing in its log";
  return new BangerError("unavailable", `the daemon exited during startup (code ${exitCode}): ${tail}`, { hint: seeLog });
}
