import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolvePaths, type Paths } from "../host/paths.ts";
import { isAlive as pidAlive } from "../vm/drivers/process.ts";
import { projectRoot } from "./skip.ts";
import { sweepDeadFakeAgents } from "./fake-firecracker/guest.ts";

/** The compiled CLI the tests drive (built by `bun run build`). */
export const bangerBin = join(projectRoot, "dist", "banger");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A throwaway HOME with its own XDG dirs, so a test's daemon and state are its own. */
export class TestHome {
  readonly root: string;
  readonly env: Record<string, string>;
  readonly paths: Paths;

  constructor(extraEnv: Record<string, string> = {}) {
    this.root = mkdtempSync(join(tmpdir(), "bgh-"));
    this.env = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: join(this.root, "home"),
      XDG_CONFIG_HOME: join(this.root, "config"),
      XDG_STATE_HOME: join(this.root, "state"),
      XDG_CACHE_HOME: join(this.root, "cache"),
      XDG_RUNTIME_DIR: join(this.root, "run"),
      NO_COLOR: "1",
      ...extraEnv,
    };
    for (const d of ["home", "config", "state", "cache", "run"]) mkdirSync(join(this.root, d), { recursive: true });
    this.paths = resolvePaths(this.env);
    // A free DNS port of its own, so test daemons never collide with each other or a real one.
    mkdirSync(this.paths.configDir, { recursive: true });
    writeFileSync(this.paths.configFile, `dns_listen = "127.0.0.1:0"\nwarm_cache = 0\n`);
  }

  /** Runs `banger args…` with this home; never throws on a non-zero exit. */
  async run(args: string[], opts: { env?: Record<string, string>; cwd?: string; stdin?: string } = {}): Promise<CliResult> {
    const proc = Bun.spawn([bangerBin, ...args], {
      env: { ...this.env, ...opts.env },
      cwd: opts.cwd ?? this.root,
      stdin: opts.stdin === undefined ? "ignore" : new Blob([opts.stdin]),
      stdout: "pipe",
      stderr: "pipe",
    });
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    return { code, stdout, stderr };
  }

  daemonPid(): number | null {
    try {
      return Number(readFileSync(this.paths.daemonPidFile, "utf8").trim()) || null;
    } catch {
      return null;
    }
  }

  /** Stops the daemon (and waits for it) and removes the whole tree. */
  async cleanup() {
    const pid = this.daemonPid();
    if (pid) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {}
      for (let i = 0; i < 100 && alive(pid); i++) await Bun.sleep(20);
      if (alive(pid)) process.kill(pid, "SIGKILL");
    }
    for (const p of daemonPids(this.paths.socket)) {
      try {
        process.kill(p, "SIGKILL");
      } catch {}
    }
    if (existsSync(this.root)) rmSync(this.root, { recursive: true, force: true });
    sweepDeadFakeAgents();
  }
}

export const alive = pidAlive;

/** Pids of banger daemons whose environment points at this runtime dir (found through /proc). */
export function daemonPids(socket: string): number[] {
  const runtime = socket.replace(/\/banger\/banger\.sock$/, "");
  const out: number[] = [];
  for (const entry of new Bun.Glob("[0-9]*").scanSync({ cwd: "/proc", onlyFiles: false })) {
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (!(cmd.includes("daemon") && cmd.includes("run"))) continue;
      const env = readFileSync(`/proc/${entry}/environ`, "utf8").split("\0");
      if (env.includes(`XDG_RUNTIME_DIR=${runtime}`)) out.push(Number(entry));
    } catch {}
  }
  return out;
}

/** Test homes keep no warm-start goldens (each would copy a guest's RAM and disks) unless the test's own config sets warm_cache. */
export function warmOff(config: string | undefined): string {
  return config && /^\s*warm_cache\s*=/m.test(config) ? "" : "warm_cache = 0\n";
}
