/**
 * The daemon's exec socket: the CLI streams `vm exec` frames here directly (no JSON RPC), and
 * the daemon relays them to the VM's agent connection, renumbering the stream. Credit flows
 * end to end (CLI and agent grant it), so the daemon holds at most a window per stream.
 */
import { chmodSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import * as v from "valibot";
import type { AgentClient, AgentStream } from "../agent/client.ts";
import {
  BULK_PROTOCOL,
  CreditGate,
  creditFrame,
  creditOf,
  encodeFrame,
  F,
  frameJson,
  frameSplitter,
  jsonFrame,
  sendChunked,
  type ExecError,
  type Frame,
} from "../agent/frames.ts";
import { BangerError, toBangerError } from "../errors.ts";
import { ExecOpenSchema, type ExecOpenRequest } from "../rpc/exec-open.ts";

/** A running VM's agent client and its address (for bulk channels; "" when it has none). */
export interface AgentTarget {
  client: AgentClient;
  ip: string;
}

/** Finds a running VM's agent for a ref; throws BangerError when it cannot. */
export type AgentFor = (ref: string) => AgentTarget;

const FORWARDED = new Set<number>([F.STDIN, F.STDIN_EOF, F.SIGNAL, F.RESIZE, F.CREDIT, F.KILL]);

function errorFrame(err: unknown): Uint8Array {
  const e = toBangerError(err);
  const body: ExecError = { message: e.code === "internal" ? "the daemon failed to start the exec" : e.message, hint: e.hint, code: e.code };
  return jsonFrame(F.ERROR, 1, body);
}

/** Parses the CLI's OPEN frame; the error names what was wrong. */
export function parseOpen(frame: Frame): ExecOpenRequest {
  const raw = frameJson<unknown>(frame);
  const r = v.safeParse(ExecOpenSchema, raw);
  if (r.success) return r.output;
  const issue = r.issues[0];
  const where = issue.path?.map((p) => String(p.key)).join(".");
  throw new BangerError("invalid_argument", `exec request: ${where ? `${where}: ` : ""}${issue.message}`, { hint: "See `banger vm exec --help`." });
}

/** How long the daemon waits for the agent's BULK answer, and for the bulk connection to close after EXIT. */
const BULK_ANSWER_MS = 10_000;
const BULK_CONNECT_MS = 5_000;

/** Connects to the agent's bulk listener and presents the token; null when it cannot. */
function connectBulk(ip: string, port: number, token: string): Promise<Socket | null> {
  return new Promise((resolve) => {
    const s = createConnection({ host: ip, port, allowHalfOpen: true });
    const fail = () => {
      s.destroy();
      resolve(null);
    };
    const timer = setTimeout(fail, BULK_CONNECT_MS);
    s.once("error", () => {
      clearTimeout(timer);
      fail();
    });
    s.once("connect", () => {
      clearTimeout(timer);
      s.setNoDelay(true);
      s.write(token);
      resolve(s);
    });
  });
}

/** The port in an agent's BULK answer, or 0 when it is an error or garbage. */
function bulkPort(f: Frame): number {
  const port = frameJson<{ port?: unknown }>(f)?.port;
  return Number.isInteger(port) && (port as number) > 0 && (port as number) < 65536 ? (port as number) : 0;
}

/**
 * One stream's bulk channel on the daemon's side: stdin from the CLI goes into the TCP
 * connection (credit back to the CLI once the kernel took it), stdout comes out of it as
 * STDOUT frames under the CLI's credit (the connection is paused meanwhile), and the EXIT
 * frame waits until the guest closed the connection, so no output is lost or reordered.
 */
class BulkRelay {
  private readonly gate = new CreditGate();
  private sending = Promise.resolve();
  private closed = false;
  private exit: Uint8Array | null = null;
  /** STDERR bytes the CLI was sent but has not granted credit for: its credit goes to the agent first. */
  stderrOwed = 0;

  constructor(
    private readonly tcp: Socket,
    private readonly toCli: (b: Uint8Array) => void,
    private readonly end: (last: Uint8Array) => void,
  ) {
    tcp.on("data", (chunk: Buffer) => {
      tcp.pause();
      this.sending = this.sending.then(async () => {
        if (await sendChunked(this.gate, F.STDOUT, 1, chunk, toCli)) tcp.resume();
      });
    });
    tcp.on("error", () => tcp.destroy());
    tcp.on("close", () => {
      this.closed = true;
      void this.sending.then(() => this.exit && end(this.exit));
    });
  }

  stdin(data: Uint8Array) {
    this.tcp.write(data, () => this.toCli(creditFrame(1, data.length)));
  }

  stdinEof() {
    this.tcp.end();
  }

  /** Splits the CLI's credit: what pays for STDERR goes back to the agent, the rest is for stdout here. */
  credit(n: number): number {
    const toAgent = Math.min(n, this.stderrOwed);
    this.stderrOwed -= toAgent;
    if (n > toAgent) this.gate.add(n - toAgent);
    return toAgent;
  }

  /** Holds EXIT until the connection closed (a guest that never closes it gets a few seconds). */
  exited(frame: Uint8Array) {
    this.exit = frame;
    if (this.closed) return void this.sending.then(() => this.end(frame));
    setTimeout(() => this.tcp.destroy(), BULK_ANSWER_MS).unref();
  }

  close() {
    this.gate.close();
    this.tcp.destroy();
  }
}

/** Relays one CLI connection: the first frame opens, the rest flow both ways until EXIT or ERROR. */
class ExecRelay {
  private stream: AgentStream | null = null;
  private queued: Frame[] = [];
  private finished = false;
  private opening = false;
  // Bulk: "pending" holds the CLI's stdin and credit until the channel is up or refused.
  private bulk: BulkRelay | null = null;
  private pending: { token: string; ip: string; held: Frame[] } | null = null;

  constructor(
    private readonly conn: Socket,
    private readonly agentFor: AgentFor,
    private readonly log: (m: string) => void,
  ) {
    conn.on(
      "data",
      frameSplitter(
        () => this.finish(errorFrame(new Error("not an exec frame"))),
        (f) => this.fromConn(f),
      ),
    );
    conn.on("error", () => conn.destroy());
    conn.on("close", () => {
      if (!this.finished && this.stream) this.stream.send(encodeFrame(F.KILL, this.stream.id));
      this.finished = true;
      this.stream?.close();
      this.bulk?.close();
    });
  }

  private finish(last?: Uint8Array) {
    if (this.finished) return;
    this.finished = true;
    this.stream?.close();
    this.bulk?.close();
    if (last) this.conn.end(last);
    else this.conn.end();
  }

  private fromConn(f: Frame) {
    if (f.type === F.OPEN && !this.opening) {
      this.opening = true;
      void this.open(f).catch((err) => {
        if (toBangerError(err).code === "internal") this.log(`exec: ${(err as Error)?.stack ?? err}`);
        this.finish(errorFrame(err));
      });
    } else if (FORWARDED.has(f.type)) {
      if (this.stream) this.fromCli(f);
      else this.queued.push(f);
    }
  }

  private async open(first: Frame) {
    const req = parseOpen(first);
    const target = this.agentFor(req.vm);
    const { vm: _vm, bulk: wantBulk, ...exec } = req;
    const stream = await target.client.openStream({
      onFrame: (f) => this.fromAgent(f),
      onGone: (why) => this.finish(jsonFrame(F.ERROR, 1, { message: `the guest agent connection was lost: ${why}`, code: "unavailable" } satisfies ExecError)),
    });
    this.stream = stream;
    if (this.finished) return void stream.send(encodeFrame(F.KILL, stream.id));
    const token = wantBulk && !exec.tty && target.ip && target.client.protocol >= BULK_PROTOCOL ? randomBytes(32).toString("hex") : null;
    if (token) {
      this.pending = { token, ip: target.ip, held: [] };
      // An agent that never answers still gets the stream, by frames.
      const noAnswer: Frame = { type: F.BULK, stream: 0, payload: new Uint8Array(0) };
      setTimeout(() => this.pending?.token === token && void this.bulkAnswer(noAnswer), BULK_ANSWER_MS).unref();
    }
    stream.send(jsonFrame(F.OPEN, stream.id, token ? { ...exec, bulk: token } : exec));
    for (const f of this.queued) this.fromCli(f);
    this.queued = [];
  }

  private forward(f: Frame) {
    this.stream?.send(encodeFrame(f.type, this.stream.id, f.payload));
  }

  private fromCli(f: Frame) {
    const bulk = this.bulk;
    if (this.pending && (f.type === F.STDIN || f.type === F.STDIN_EOF || f.type === F.CREDIT)) return void this.pending.held.push(f);
    if (bulk && f.type === F.STDIN) return bulk.stdin(f.payload);
    if (bulk && f.type === F.STDIN_EOF) return bulk.stdinEof();
    if (bulk && f.type === F.CREDIT) {
      const toAgent = bulk.credit(creditOf(f));
      return void (toAgent && this.stream?.send(creditFrame(this.stream.id, toAgent)));
    }
    this.forward(f);
  }

  private fromAgent(f: Frame) {
    if (f.type === F.BULK) return void this.bulkAnswer(f);
    const out = encodeFrame(f.type, 1, f.payload);
    if (f.type === F.EXIT && this.bulk) return this.bulk.exited(out);
    if (f.type === F.EXIT || f.type === F.ERROR) return this.finish(out);
    if (f.type === F.STDERR && this.bulk) this.bulk.stderrOwed += f.payload.length;
    this.conn.write(out);
  }

  /** The agent's BULK answer (or none in time): connect and carry the stream's stdin and stdout, or tell the agent to use frames. */
  private async bulkAnswer(f: Frame) {
    const stream = this.stream;
    if (!this.pending || !stream) return;
    const { token, ip, held } = this.pending;
    const port = bulkPort(f);
    const tcp = port ? await connectBulk(ip, port, token) : null;
    if (this.finished) return void tcp?.destroy();
    this.pending = null;
    if (tcp)
      this.bulk = new BulkRelay(
        tcp,
        (b) => this.conn.write(b),
        (last) => this.finish(last),
      );
    else {
      this.log(`exec: no bulk channel to ${ip}${port ? `:${port}` : ""} (${port ? "cannot connect" : "the agent offered none"}); the stream uses frames`);
      stream.send(encodeFrame(F.BULK, stream.id));
    }
    for (const h of held) this.fromCli(h);
  }
}

/** Listens on `path` (mode 0600, in the 0700 runtime dir) for exec connections. */
export function startExecServer(path: string, agentFor: AgentFor, log: (m: string) => void): Promise<Server> {
  rmSync(path, { force: true });
  const server = createServer((conn) => void new ExecRelay(conn, agentFor, log));
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      chmodSync(path, 0o600);
      resolve(server);
    });
  });
}
