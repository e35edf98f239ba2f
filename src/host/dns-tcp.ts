import type net from "node:net";
import { plainSource, type Responder } from "./dns-responder.ts";

/**
 * What one client may hold of the daemon over DNS-over-TCP. A client that pipelines
 * queries and never reads its replies is paused once `maxUnsentBytes` of replies wait
 * in the socket or `maxPendingReplies` are being worked out; it then sits idle and is
 * closed after `idleMs`. The kernel buffers megabytes of replies before that, so a
 * connection also ends after `maxMessages` queries (RFC 7766 lets a server close; clients
 * reconnect).
 */
export interface TcpLimits {
  maxConnections: number;
  maxConnectionsPerSource: number;
  maxPendingReplies: number;
  maxUnsentBytes: number;
  maxMessages: number;
  idleMs: number;
}

export const TCP_LIMITS: TcpLimits = {
  maxConnections: 16,
  maxConnectionsPerSource: 4,
  maxPendingReplies: 16,
  maxUnsentBytes: 64 * 1024,
  maxMessages: 500,
  idleMs: 10_000,
};

/**
 * Received bytes kept while paused. The runtime hands over reads of up to 512 KiB at once,
 * so this is two such reads; more means the client ignored the pause.
 */
const MAX_BUFFERED_INPUT = 1024 * 1024;

/** How often open connections are checked for input the runtime read while they were paused. */
const SWEEP_MS = 100;

/** The 2-byte length prefix of RFC 7766 framing. */
function frame(msg: Buffer): Buffer {
  const out = Buffer.alloc(2 + msg.length);
  out.writeUInt16BE(msg.length, 0);
  msg.copy(out, 2);
  return out;
}

/** Serves one TCP connection: length-prefixed, pipelined messages, reading only while replies are bounded. */
export function serveTcpConnection(conn: net.Socket, respond: Responder, limits: TcpLimits = TCP_LIMITS) {
  const source = plainSource(conn.remoteAddress ?? "");
  let input: Buffer = Buffer.alloc(0);
  let working = 0;
  let served = 0;
  let paused = false;
  let scheduled = false;
  // Replies resolve in microtasks; going on from the next turn of the event loop keeps one
  // busy client from starving UDP, RPC and the other connections.
  const later = () => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      pump();
    });
  };
  const spent = () => served >= limits.maxMessages;
  const busy = () => spent() || working >= limits.maxPendingReplies || conn.writableLength >= limits.maxUnsentBytes;
  const pump = () => {
    while (!conn.destroyed && !busy() && input.length >= 2) {
      const len = input.readUInt16BE(0);
      if (input.length < 2 + len) break;
      const msg = Buffer.from(input.subarray(2, 2 + len));
      input = input.subarray(2 + len);
      working++;
      served++;
      void respond(msg, source).then((reply) => {
        working--;
        if (reply && !conn.destroyed) conn.write(frame(reply), () => idle.refresh());
        later();
      });
    }
    if (busy() !== paused) {
      paused = !paused;
      if (paused) conn.pause();
      else conn.resume();
    }
    if (spent()) input = Buffer.alloc(0); // nothing more will be read from this connection
    if (spent() && working === 0 && !conn.writableEnded) conn.end();
  };
  // Not conn.setTimeout: a reply stuck in the socket counts as activity there, so a client
  // that never reads would never time out. Idle here means nothing read and nothing delivered.
  const idle = setTimeout(() => conn.destroy(), limits.idleMs);
  conn.on("close", () => clearTimeout(idle));
  conn.on("error", () => conn.destroy());
  conn.on("drain", pump);
  conn.on("data", (chunk: Buffer) => {
    if (spent()) return;
    idle.refresh();
    input = input.length ? Buffer.concat([input, chunk]) : chunk;
    if (input.length > MAX_BUFFERED_INPUT) return void conn.destroy();
    pump();
  });
}

/**
 * Admits connections up to the overall and per-source caps; the rest are closed at once.
 * When a client closes its side, the runtime reads everything the kernel still holds for a
 * paused socket (megabytes) into memory; the sweep destroys such connections quickly.
 */
export function connectionGate(limits: TcpLimits = TCP_LIMITS) {
  const open = new Set<net.Socket>();
  const bySource = new Map<string, number>();
  const sweep = setInterval(() => {
    for (const c of open) if (c.readableLength > MAX_BUFFERED_INPUT) c.destroy();
  }, SWEEP_MS);
  sweep.unref();
  return {
    open,
    close() {
      clearInterval(sweep);
      for (const c of open) c.destroy();
    },
    admit(conn: net.Socket): boolean {
      const source = plainSource(conn.remoteAddress ?? "");
      const mine = bySource.get(source) ?? 0;
      if (open.size >= limits.maxConnections || mine >= limits.maxConnectionsPerSource) {
        conn.destroy();
        return false;
      }
      open.add(conn);
      bySource.set(source, mine + 1);
      conn.on("close", () => {
        open.delete(conn);
        const left = (bySource.get(source) ?? 1) - 1;
        if (left > 0) bySource.set(source, left);
        else bySource.delete(source);
      });
      return true;
    },
  };
}
