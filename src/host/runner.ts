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
    const proc = Bun.spawn(argv, {
      cwd: opts.cwd,
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      stdin: opts.stdin === undefined ? "ignore" : new Blob([opts.stdin]),
      stdout: "pipe",
      stderr: "pipe",
      timeout: opts.timeoutMs,
    });
    const [stdout, stderr, code] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    const result = { code, stdout, stderr };
    if (code !== 0 && !opts.allowFailure) throw new CommandError(argv, result);
    return result;
  },
};

/** A Runner for tests: records every argv and answers from overrides (default: success, empty output). */
export class RecordingRunner implements Runner {
  readonly calls: string[][] = [];
  constructor(private readonly answer: (argv: string[]) => Partial<RunResult> | undefined = () => undefined) {}
  async run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    this.calls.push(argv);
    const a = this.answer(argv) ?? {};
    const result = { code: a.code ?? 0, stdout: a.stdout ?? "", stderr: a.stderr ?? "" };
    if (result.code !== 0 && !opts.allowFailure) throw new CommandError(argv, result);
    return result;
  }
}
