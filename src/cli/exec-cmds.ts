/**
 * `vm exec`: a command in the guest through the agent, with this terminal's stdin, stdout
 * and stderr; `--tty` puts it on a PTY (raw keys, size and resizes follow this terminal).
 */
import { BangerError } from "../errors.ts";
import { startExec, type ExecHandle } from "./exec-client.ts";
import type { ExecOpenRequest } from "../rpc/exec-open.ts";

/** Options of `vm exec` as cac hands them over. */
export interface ExecCliOptions {
  tty?: boolean;
  env?: string | string[];
  cwd?: string;
  user?: string;
}

/** `K=V` strings into a record; names what is wrong. */
export function parseEnv(pairs: string | string[] | undefined): Record<string, string> | undefined {
  if (pairs === undefined) return undefined;
  const env: Record<string, string> = {};
  for (const pair of Array.isArray(pairs) ? pairs : [pairs]) {
    const at = String(pair).indexOf("=");
    if (at <= 0) throw new BangerError("invalid_argument", `--env ${pair}: expected NAME=VALUE`, { hint: "For example: --env DEBUG=1" });
    env[String(pair).slice(0, at)] = String(pair).slice(at + 1);
  }
  return env;
}

/** Writes a chunk and resolves once the stream took it (rejects on EPIPE). */
export function writerFor(stream: NodeJS.WritableStream): (chunk: Uint8Array) => Promise<void> {
  stream.on("error", () => {});
  return (chunk) => new Promise<void>((resolve, reject) => void stream.write(chunk, (err) => (err ? reject(err) : resolve())));
}

/** Forwards signals (or, on a TTY, resizes) while the exec runs; returns the undo. */
function forwardSignals(handle: ExecHandle, tty: boolean): () => void {
  const undo: Array<() => void> = [];
  const on = (sig: NodeJS.Signals, fn: () => void) => {
    process.on(sig, fn);
    undo.push(() => process.off(sig, fn));
  };
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"] as const) on(sig, () => handle.signal(sig));
  if (tty && process.stdout.isTTY) on("SIGWINCH", () => handle.resize(process.stdout.rows, process.stdout.columns));
  return () => undo.forEach((u) => u());
}

/** Runs the exec against this process's stdio; resolves the remote exit code. */
export async function execCommand(
  execSocket: string,
  ref: string,
  argv: string[],
  o: ExecCliOptions,
  ready: () => Promise<void> = async () => {},
): Promise<number> {
  if (!argv.length) throw new BangerError("invalid_argument", "vm exec needs a command", { hint: "For example: banger vm exec web -- uname -a" });
  const tty = Boolean(o.tty);
  const open: ExecOpenRequest = { vm: ref, argv, env: parseEnv(o.env), cwd: o.cwd, user: o.user, tty };
  await ready();
  if (tty && process.stdout.isTTY) Object.assign(open, { rows: process.stdout.rows, cols: process.stdout.columns });
  const raw = tty && process.stdin.isTTY;
  if (raw) process.stdin.setRawMode(true);
  try {
    const handle = await startExec(execSocket, JSON.parse(JSON.stringify(open)), {
      stdin: process.stdin as AsyncIterable<Uint8Array>,
      stdout: writerFor(process.stdout),
      stderr: writerFor(process.stderr),
    });
    const undo = forwardSignals(handle, tty);
    try {
      const exit = await handle.done;
      return exit.code;
    } catch (err) {
      if ((err as NodeJS.ErrnoException)?.code === "EPIPE") return 141;
      throw err;
    } finally {
      undo();
    }
  } finally {
    if (raw) process.stdin.setRawMode(false);
    process.stdin.pause();
  }
}
