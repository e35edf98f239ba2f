/**
 * Crashing a test home's daemon at a named point: the daemon is started with BANGER_PAUSE_AT_STEP,
 * holds there (logging "paused at <point>"), and is killed with SIGKILL; the next CLI call starts a
 * fresh daemon whose reconcile is under test. Plus what the tests read of the home afterwards.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { openStoreReadOnly } from "../store/db.ts";
import { isAlive } from "../vm/drivers/process.ts";
import { bangerBin, type CliResult, type TestHome } from "./cli.ts";

/** The VM rows as the store has them (read without a daemon). */
export function storeRows(h: TestHome): Array<{ id: string; name: string; state: string }> {
  if (!existsSync(h.paths.dbFile)) return [];
  const db = openStoreReadOnly(h.paths.dbFile)!;
  const r = db.query<{ id: string; name: string; state: string }, []>("SELECT id, name, state FROM vms").all();
  db.close();
  return r;
}

export const vmDirs = (h: TestHome): string[] => (existsSync(h.paths.vmsDir) ? readdirSync(h.paths.vmsDir) : []);

/** Command lines of processes naming the home's VM directory (VMMs, and agents of the fake). */
export const vmmProcs = (h: TestHome): string => Bun.spawnSync(["pgrep", "-af", h.paths.vmsDir]).stdout.toString().trim();

export async function waitForLog(h: TestHome, from: number, marker: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (existsSync(h.paths.daemonLog) && readFileSync(h.paths.daemonLog, "utf8").slice(from).includes(marker)) return;
    await Bun.sleep(20);
  }
  throw new Error(`no "${marker}" in the daemon log within ${timeoutMs} ms; it says:\n${readFileSync(h.paths.daemonLog, "utf8").slice(from)}`);
}

export async function killDaemon(h: TestHome): Promise<number> {
  const pid = h.daemonPid()!;
  process.kill(pid, "SIGKILL");
  while (isAlive(pid)) await Bun.sleep(10);
  return pid;
}

/** Where the daemon log ends now, so a test reads only what comes after. */
export const logMark = (h: TestHome): number => (existsSync(h.paths.daemonLog) ? statSync(h.paths.daemonLog).size : 0);

/**
 * Runs `args` on a fresh daemon told to hold at `point`, kills that daemon with SIGKILL once it
 * holds there, and returns what the CLI call said plus where the log stood before it. The CLI
 * retries some calls on a fresh daemon (which would hold again); `killClient` freezes it before
 * the daemon dies and kills it after, so only the next call of the test starts a daemon.
 */
export async function crashAt(
  h: TestHome,
  point: string,
  args: string[],
  opts: { timeoutMs?: number; killClient?: boolean } = {},
): Promise<{ result: CliResult; logFrom: number; pid: number }> {
  await h.run(["daemon", "stop"]);
  const logFrom = logMark(h);
  const proc = Bun.spawn([bangerBin, ...args], { env: { ...h.env, BANGER_PAUSE_AT_STEP: point }, cwd: h.root, stdout: "pipe", stderr: "pipe" });
  const call = Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]).then(([stdout, stderr, code]) => ({
    code,
    stdout,
    stderr,
  }));
  // A call that ends on its own never holds: fail with what it said instead of waiting out the timeout.
  const ended = call.then((r) => {
    throw new Error(
      `${args.join(" ")} ended before holding at ${point} (exit ${r.code}): ${r.stderr}\n${readFileSync(h.paths.daemonLog, "utf8").slice(logFrom)}`,
    );
  });
  ended.catch(() => {});
  try {
    await Promise.race([waitForLog(h, logFrom, `paused at ${point}`, opts.timeoutMs ?? 120_000), ended]);
  } catch (err) {
    proc.kill("SIGKILL");
    throw err;
  }
  if (opts.killClient) proc.kill("SIGSTOP");
  const pid = await killDaemon(h);
  if (opts.killClient) proc.kill("SIGKILL");
  return { result: await call, logFrom, pid };
}
