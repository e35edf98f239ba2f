/**
 * The agent's side of `vm exec`: one process per stream, its stdin, stdout and stderr as
 * frames under credit flow control, a PTY when asked (Bun.Terminal + `setsid -c`, so the
 * PTY is the controlling terminal and Ctrl-C reaches the foreground job), signals to the
 * process group, and an EXIT frame with the code (128+n for a signal) once output drained.
 */
import { existsSync, readFileSync } from "node:fs";
import type { Socket } from "node:net";
import { constants } from "node:os";
import { CreditGate, F, creditFrame, creditOf, encodeFrame, frameJson, jsonFrame, sendChunked, type ExecExit, type ExecOpen, type Frame } from "./frames.ts";
import { BULK_TOKEN, bulkLink, type BulkLink } from "./bulk.ts";

export type Send = (bytes: Uint8Array) => void;

const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** One running exec. */
interface Session {
  stdin(data: Uint8Array): void;
  stdinEof(): void;
  signal(name: string): void;
  resize(rows: number, cols: number): void;
  credit(bytes: number): void;
  /** The host gave up on the bulk channel: everything goes by frames. */
  bulkOff?(): void;
  kill(): void;
}

/** A user's home and whether it exists in /etc/passwd. */
export function passwdEntry(user: string, passwd = "/etc/passwd"): { uid: number; home: string } | null {
  let text = "";
  try {
    text = readFileSync(passwd, "utf8");
  } catch {
    return null;
  }
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f[0] === user && f.length >= 7) return { uid: Number(f[2]), home: f[5] || "/" };
  }
  return null;
}

/** The argv, environment and directory a request runs with; a string is the reason it cannot. */
export function execPlan(open: ExecOpen, passwd = "/etc/passwd"): { argv: string[]; env: Record<string, string>; cwd: string } | string {
  if (!Array.isArray(open.argv) || !open.argv.length || open.argv.some((a) => typeof a !== "string")) return "exec needs a command";
  const user = open.user || "root";
  const entry = passwdEntry(user, passwd) ?? (user === "root" ? { uid: 0, home: "/root" } : null);
  if (!entry) return `there is no user ${JSON.stringify(user)} in the guest`;
  const cwd = open.cwd || (existsSync(entry.home) ? entry.home : "/");
  if (!existsSync(cwd)) return `there is no directory ${cwd} in the guest`;
  const env: Record<string, string> = {
    PATH,
    HOME: entry.home,
    USER: user,
    LOGNAME: user,
    LANG: "C.UTF-8",
    ...(open.tty ? { TERM: "xterm-256color" } : {}),
    ...(open.env ?? {}),
  };
  const asUser = entry.uid === 0 ? [] : ["runuser", "-u", user, "--"];
  const argv = open.tty ? ["setsid", "-c", ...asUser, ...open.argv] : [...asUser, ...open.argv];
  return { argv, env, cwd };
}

/** The exit code a shell would report: the code, or 128+n for signal n. */
export function exitOf(code: number | null, signal: string | number | null): ExecExit {
  if (typeof signal === "number") return { code: 128 + signal };
  if (signal) return { code: 128 + ((constants.signals as Record<string, number>)[signal] ?? 0), signal };
  return { code: code ?? 1 };
}

function killGroup(pid: number, signal: string | number) {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // Already gone.
    }
  }
}

function validSignal(name: string): boolean {
  return Object.hasOwn(constants.signals, name);
}

type Plan = Exclude<ReturnType<typeof execPlan>, string>;

/** A bulk channel being set up for a stream (see bulk.ts), or null for frames only. */
type Bulk = { link: Promise<BulkLink | null>; cancel(): void } | null;

/** Writes to a socket and resolves once the bytes are handed to the kernel (or the socket is gone). */
function writeSocket(conn: Socket, data: Uint8Array): Promise<boolean> {
  return new Promise((r) => {
    if (conn.destroyed) return r(false);
    conn.write(data, (err) => r(!err));
  });
}

/** Feeds a bulk connection's bytes to the process's stdin, one chunk at a time (TCP holds the rest). */
function bulkStdin(link: BulkLink, write: (d: Uint8Array) => Promise<void>, end: () => void) {
  const { conn, first } = link;
  let chain = first.length ? write(first) : Promise.resolve();
  conn.on("data", (chunk: Buffer) => {
    conn.pause();
    chain = chain.then(() => write(chunk)).then(() => void conn.resume());
  });
  conn.on("end", () => void chain.then(end));
  conn.on("error", () => conn.destroy());
  conn.resume();
}

/** A process's stdin as two calls that never throw: what a process that closed its stdin did not read is dropped, as with a pipe. */
function stdinOf(proc: { stdin: { write(d: Uint8Array): unknown; flush(): unknown; end(): unknown } }) {
  return {
    write: async (data: Uint8Array) => {
      try {
        proc.stdin.write(data);
        await proc.stdin.flush();
      } catch {
        // The process closed its stdin.
      }
    },
    end: async () => {
      try {
        await proc.stdin.end();
      } catch {
        // Already closed.
      }
    },
  };
}

/** Runs with pipes: stdout and stderr pulled only as credit allows, so the process blocks instead of memory growing. */
function pipedSession(id: number, plan: Plan, send: Send, done: () => void, bulk: Bulk): Session {
  const proc = Bun.spawn(plan.argv, { cwd: plan.cwd, env: plan.env, stdin: "pipe", stdout: "pipe", stderr: "pipe", detached: true });
  const out = new CreditGate();
  let conn: Socket | null = null;
  const pump = async (readable: ReadableStream<Uint8Array>, type: typeof F.STDOUT | typeof F.STDERR) => {
    const reader = readable.getReader();
    const link = type === F.STDOUT && bulk ? await bulk.link : null;
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) return link ? new Promise<void>((r) => link.conn.end(r)) : undefined;
      const sent = link ? await writeSocket(link.conn, value) : await sendChunked(out, type, id, value, send);
      if (!sent) return void reader.cancel().catch(() => {});
    }
  };
  let input = Promise.resolve();
  const { write: writeStdin, end: endStdin } = stdinOf(proc);
  void bulk?.link.then((link) => {
    if (!link) return;
    conn = link.conn;
    bulkStdin(link, writeStdin, () => void endStdin());
  });
  void Promise.all([pump(proc.stdout, F.STDOUT), pump(proc.stderr, F.STDERR), proc.exited]).then(() => {
    send(jsonFrame(F.EXIT, id, exitOf(proc.exitCode, proc.signalCode)));
    out.close();
    bulk?.cancel();
    done();
  });
  return {
    stdin: (data) => {
      input = input.then(async () => {
        await writeStdin(data);
        send(creditFrame(id, data.length));
      });
    },
    stdinEof: () => {
      input = input.then(endStdin);
    },
    signal: (name) => killGroup(proc.pid, name),
    resize: () => {},
    credit: (n) => out.add(n),
    bulkOff: () => bulk?.cancel(),
    kill: () => {
      out.close();
      bulk?.cancel();
      (conn as Socket | null)?.destroy();
      killGroup(proc.pid, "SIGKILL");
    },
  };
}

/** Runs on a PTY: one output stream, keys written as typed, resizes followed. */
function ttySession(id: number, plan: Plan, open: ExecOpen, send: Send, done: () => void): Session {
  const out = new CreditGate();
  let ptyClosed: () => void = () => {};
  const closed = new Promise<void>((r) => (ptyClosed = r));
  let output = Promise.resolve(true);
  const terminal = new Bun.Terminal({
    cols: open.cols || 80,
    rows: open.rows || 24,
    data: (_t, data) => {
      const copy = data.slice();
      output = output.then((ok) => ok && sendChunked(out, F.STDOUT, id, copy, send));
    },
    exit: () => ptyClosed(),
  });
  const proc = Bun.spawn(plan.argv, { cwd: plan.cwd, env: plan.env, terminal });
  void proc.exited.then(async () => {
    // The PTY reports EOF once the last holder of the terminal is gone; do not wait forever for it.
    await Promise.race([closed, Bun.sleep(1000)]);
    await output;
    terminal.close();
    send(jsonFrame(F.EXIT, id, exitOf(proc.exitCode, proc.signalCode)));
    out.close();
    done();
  });
  return {
    stdin: (data) => {
      terminal.write(data);
      send(creditFrame(id, data.length));
    },
    stdinEof: () => {},
    signal: (name) => killGroup(proc.pid, name),
    resize: (rows, cols) => terminal.resize(cols, rows),
    credit: (n) => out.add(n),
    kill: () => {
      out.close();
      killGroup(proc.pid, "SIGKILL");
    },
  };
}

/** The exec streams of one host connection. */
export class ExecSessions {
  private readonly sessions = new Map<number, Session>();

  constructor(
    private readonly send: Send,
    private readonly passwd = "/etc/passwd",
  ) {}

  get size() {
    return this.sessions.size;
  }

  /** Handles one frame from the host. */
  onFrame(frame: Frame) {
    if (frame.type === F.OPEN) return this.open(frame);
    const s = this.sessions.get(frame.stream);
    if (!s) return;
    if (frame.type === F.STDIN) s.stdin(frame.payload);
    else if (frame.type === F.STDIN_EOF) s.stdinEof();
    else if (frame.type === F.CREDIT) s.credit(creditOf(frame));
    else if (frame.type === F.KILL) s.kill();
    else if (frame.type === F.BULK) s.bulkOff?.();
    else if (frame.type === F.SIGNAL) {
      const name = frameJson<{ signal?: string }>(frame)?.signal ?? "";
      if (validSignal(name)) s.signal(name);
    } else if (frame.type === F.RESIZE) {
      const size = frameJson<{ rows?: number; cols?: number }>(frame);
      if (size?.rows && size.cols) s.resize(size.rows, size.cols);
    }
  }

  /** Kills every process of this connection (the host went away). */
  closeAll() {
    for (const s of this.sessions.values()) s.kill();
    this.sessions.clear();
  }

  /** The bulk channel the host asked for with a token in OPEN (pipes only), announced in a BULK frame. */
  private bulk(id: number, open: ExecOpen): Bulk {
    if (typeof open.bulk !== "string" || !BULK_TOKEN.test(open.bulk)) return null;
    return bulkLink(open.bulk, (answer) => this.send(jsonFrame(F.BULK, id, answer)));
  }

  private open(frame: Frame) {
    const id = frame.stream;
    const open = frameJson<ExecOpen>(frame);
    const plan = open ? execPlan(open, this.passwd) : "the exec request is not valid JSON";
    if (typeof plan === "string" || !open) return this.send(jsonFrame(F.ERROR, id, { message: plan as string }));
    if (this.sessions.has(id)) return this.send(jsonFrame(F.ERROR, id, { message: `stream ${id} is already open` }));
    const done = () => this.sessions.delete(id);
    try {
      this.sessions.set(id, open.tty ? ttySession(id, plan, open, this.send, done) : pipedSession(id, plan, this.send, done, this.bulk(id, open)));
    } catch (err) {
      // Bun cannot start it (no such program): say so like a shell and exit 127.
      const why = err instanceof Error ? err.message : String(err);
      this.send(encodeFrame(F.STDERR, id, new TextEncoder().encode(`banger-agent: cannot run ${open.argv[0]}: ${why}\n`)));
      this.send(jsonFrame(F.EXIT, id, { code: 127 }));
    }
  }
}
