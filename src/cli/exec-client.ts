/**
 * The CLI's side of the exec socket: opens one stream, feeds stdin under the agent's credit,
 * hands stdout and stderr to sinks and grants credit back only once a sink took the bytes,
 * so a slow reader slows the remote process instead of filling memory anywhere.
 */
import { createConnection, type Socket } from "node:net";
import {
  CreditGate,
  F,
  creditFrame,
  creditOf,
  encodeFrame,
  frameJson,
  frameSplitter,
  jsonFrame,
  sendChunked,
  type ExecError,
  type ExecExit,
  type Frame,
} from "../agent/frames.ts";
import { BangerError, ERROR_CODES, type ErrorCode } from "../errors.ts";
import { assertTrustedSocket } from "../rpc/socket-trust.ts";
import type { GuestShell } from "../workspace/shell.ts";
import type { ExecOpenRequest } from "../rpc/exec-open.ts";

/** Where an exec's input comes from and its output goes. */
export interface ExecIo {
  /** Chunks for the remote stdin; its end closes the remote stdin. Absent: stdin is closed at once. */
  stdin?: AsyncIterable<Uint8Array> | null;
  /** Takes a chunk of stdout; resolve once it is written (credit is granted then). */
  stdout(chunk: Uint8Array): Promise<void> | void;
  stderr(chunk: Uint8Array): Promise<void> | void;
}

/** A running exec. */
export interface ExecHandle {
  done: Promise<ExecExit>;
  signal(name: string): void;
  resize(rows: number, cols: number): void;
  /** Ends the remote process (SIGKILL) and the stream. */
  kill(): void;
}

/** Connects to the exec socket after the same ownership check as the RPC socket's. */
function connect(path: string): Promise<Socket> {
  assertTrustedSocket(path);
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    s.once("connect", () => {
      s.off("error", reject);
      resolve(s);
    });
    s.once("error", (err) =>
      reject(new BangerError("unavailable", `cannot reach the daemon's exec socket ${path}: ${err.message}`, { hint: "See `banger daemon status`." })),
    );
  });
}

function execError(frame: Frame): BangerError {
  const e = frameJson<ExecError>(frame) ?? { message: "the exec failed" };
  const code = (ERROR_CODES as readonly string[]).includes(e.code ?? "") ? (e.code as ErrorCode) : "unavailable";
  return new BangerError(code, e.message, { hint: e.hint });
}

/** Sends stdin under credit, then STDIN_EOF. */
async function pumpStdin(stdin: AsyncIterable<Uint8Array> | null | undefined, gate: CreditGate, send: (b: Uint8Array) => void) {
  if (stdin) {
    for await (const chunk of stdin) {
      if (!(await sendChunked(gate, F.STDIN, 1, chunk, send))) return;
    }
  }
  send(encodeFrame(F.STDIN_EOF, 1));
}

/** Opens an exec on the daemon's exec socket. */
export async function startExec(socketPath: string, open: ExecOpenRequest, io: ExecIo): Promise<ExecHandle> {
  const sock = await connect(socketPath);
  const input = new CreditGate();
  let output = Promise.resolve();
  const send = (b: Uint8Array) => {
    if (!sock.destroyed) sock.write(b);
  };
  const done = new Promise<ExecExit>((resolve, reject) => {
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      input.close();
      fn();
      sock.end();
    };
    // A sink that fails (EPIPE: the reader went away) ends the remote process, as a pipe would.
    const sink = (take: ExecIo["stdout"], f: Frame) => {
      output = output.then(async () => {
        if (settled) return;
        try {
          await take(f.payload);
        } catch (err) {
          send(encodeFrame(F.KILL, 1));
          return settle(() => reject(err));
        }
        send(creditFrame(1, f.payload.length));
      });
    };
    sock.on(
      "data",
      frameSplitter(
        () => {},
        (f) => {
          if (f.type === F.STDOUT) sink(io.stdout, f);
          else if (f.type === F.STDERR) sink(io.stderr, f);
          else if (f.type === F.CREDIT) input.add(creditOf(f));
          else if (f.type === F.EXIT) {
            const exit = frameJson<ExecExit>(f) ?? { code: 1 };
            void output.then(() => settle(() => resolve(exit)));
          } else if (f.type === F.ERROR) void output.finally(() => settle(() => reject(execError(f))));
        },
      ),
    );
    sock.on("error", () => {});
    sock.on("close", () =>
      settle(() => reject(new BangerError("unavailable", "the exec connection closed before the command finished", { hint: "See `banger daemon logs`." }))),
    );
  });
  send(jsonFrame(F.OPEN, 1, open));
  void pumpStdin(io.stdin, input, send).catch(() => send(encodeFrame(F.STDIN_EOF, 1)));
  return {
    done,
    signal: (name) => send(jsonFrame(F.SIGNAL, 1, { signal: name })),
    resize: (rows, cols) => send(jsonFrame(F.RESIZE, 1, { rows, cols })),
    kill: () => {
      send(encodeFrame(F.KILL, 1));
      input.close();
    },
  };
}

/** Collects a stream up to `max` bytes; what is past the cap is counted, not kept. */
export function capped(max: number) {
  const parts: Uint8Array[] = [];
  let kept = 0;
  let total = 0;
  return {
    take: (chunk: Uint8Array) => {
      total += chunk.length;
      if (kept < max) {
        const part = chunk.subarray(0, max - kept);
        parts.push(part.slice());
        kept += part.length;
      }
    },
    bytes: () => Buffer.concat(parts),
    text: () => Buffer.concat(parts).toString("utf8"),
    truncated: () => total > kept,
    total: () => total,
  };
}

async function* once(data: Uint8Array) {
  yield data;
}

/** Input up to this size goes in frames: setting up a bulk channel costs more than it saves. */
export const BULK_MIN_BYTES = 256 * 1024;

/**
 * Reads the start of `input` (up to `min` bytes): small input comes back whole with `bulk` false,
 * larger input as the same bytes in order (what was read, then the rest) with `bulk` true.
 */
export async function sizeUp(input: AsyncIterable<Uint8Array>, min = BULK_MIN_BYTES): Promise<{ stdin: AsyncIterable<Uint8Array>; bulk: boolean }> {
  const it = input[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  let size = 0;
  while (size < min) {
    const next = await it.next();
    if (next.done)
      return {
        stdin: (async function* () {
          yield* head;
        })(),
        bulk: false,
      };
    head.push(next.value);
    size += next.value.byteLength;
  }
  async function* all() {
    yield* head;
    for (let next = await it.next(); !next.done; next = await it.next()) yield next.value;
  }
  return { stdin: all(), bulk: true };
}

/** The workspace's GuestShell over the agent: `sh -c cmd` as root in /root, like the SSH one. */
export function agentShell(execSocket: string, vm: string): GuestShell {
  return {
    async exec(cmd, io = {}) {
      const out = capped(64 * 1024 * 1024);
      const err = capped(16 * 1024 * 1024);
      const input = io.stdin === undefined ? null : io.stdin instanceof Uint8Array ? once(io.stdin) : io.stdin;
      // Large input (an archive, a big pack) goes over the bulk channel: the agent's own port is slow for it.
      const { stdin, bulk } = input ? await sizeUp(input) : { stdin: null, bulk: false };
      const handle = await startExec(
        execSocket,
        { vm, argv: ["sh", "-c", cmd], bulk },
        { stdin, stdout: io.onStdout ?? out.take, stderr: io.onStderr ?? err.take },
      );
      const exit = await handle.done;
      return { code: exit.code, stdout: out.text(), stderr: err.text() };
    },
  };
}

/**
 * Whether commands for `vm` should go through the agent. BANGER_GUEST_TRANSPORT=ssh or =agent
 * decides; else `prefer` does. The agent is used only when a `true` through it runs (not with
 * an agent too old for exec, nor with none answering).
 */
export async function agentUsable(
  execSocket: string,
  vm: string,
  env: Record<string, string | undefined> = process.env,
  prefer: "agent" | "ssh" = "agent",
): Promise<boolean> {
  const choice = env.BANGER_GUEST_TRANSPORT === "ssh" || env.BANGER_GUEST_TRANSPORT === "agent" ? env.BANGER_GUEST_TRANSPORT : prefer;
  if (choice === "ssh") return false;
  try {
    const handle = await startExec(execSocket, { vm, argv: ["true"] }, { stdout: () => {}, stderr: () => {} });
    return (await handle.done).code === 0;
  } catch (err) {
    if (err instanceof BangerError && (err.code === "failed_precondition" || err.code === "unavailable" || err.code === "timeout")) return false;
    throw err;
  }
}
