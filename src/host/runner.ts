import { BangerError } from "../errors.ts";

/** The seam through which banger runs host commands; tests pass a recording fake. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  stdin?: string | Uint8Array;
  /** Resolve with the non-zero result instead of throwing. */
  allowFailure?: boolean;
  timeoutMs?: number;
  /** Aborting stops the command and everything it started, and the run fails as cancelled. */
  signal?: AbortSignal;
}

export interface Runner {
  run(argv: string[], opts?: RunOptions): Promise<RunResult>;
}

/** Thrown when a command exits non-zero and the caller did not allow failure. */
export class CommandError extends Error {
  constructor(
    readonly argv: string[],
    readonly result: RunResult,
  ) {
    super(`${argv.join(" ")} exited ${result.code}: ${(result.stderr || result.stdout).trim().split("\n").slice(-3).join(" | ")}`);
    this.name = "CommandError";
  }
}

/** Runs commands with Bun.spawn. */
export const hostRunner: Runner = {
  async run(argv, opts = {}) {
    const { signal } = opts;
    if (signal?.aborted) throw cancelled(argv);
    const proc = Bun.spawn(argv, {
      cwd: opts.cwd,
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      stdin: opts.stdin === undefined ? "ignore" : new Blob([opts.stdin]),
      stdout: "pipe",
      stderr: "pipe",
      timeout: opts.timeoutMs,
      // A cancellable command leads its own process group, so a cancel reaches its children too.
      detached: signal !== undefined,
    });
    const stop = () => killGroup(proc.pid);
    signal?.addEventListener("abort", stop, { once: true });
    try {
      const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
      if (signal?.aborted) throw cancelled(argv);
      const result = { code, stdout, stderr };
      if (code !== 0 && !opts.allowFailure) throw new CommandError(argv, result);
      return result;
    } finally {
      signal?.removeEventListener("abort", stop);
    }
  },
};

function cancelled(argv: string[]): BangerError {
  return new BangerError("cancelled", `${argv[0]} was cancelled`);
}

/** SIGTERM to the process group, then SIGKILL to whatever is left of it a moment later. */
function killGroup(pid: number): void {
  const kill = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      // the group is gone already
    }
  };
  kill("SIGTERM");
  setTimeout(() => kill("SIGKILL"), 3000).unref();
}

/** The same runner with every command cancelled by `signal` (a caller that went away). */
export function cancellableRunner(runner: Runner, signal: AbortSignal): Runner {
  return { run: (argv, opts) => runner.run(argv, { ...opts, signal }) };
}
