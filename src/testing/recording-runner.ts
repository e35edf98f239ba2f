import { CommandError, type Runner, type RunOptions, type RunResult } from "../host/runner.ts";

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
