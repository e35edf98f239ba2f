/**
 * An exec's bulk channel: a TCP connection from the host to the guest's own address that
 * carries the stream's stdin and stdout as plain bytes. A virtio-serial port moves a page per
 * read (a few MB/s under emulation); the guest's network moves tens of times more. The host
 * asks for it with a token in OPEN; the agent listens on a fresh port, says which in a BULK
 * frame, and takes the first connection that starts with the token. Control, stderr and the
 * exit code stay on the agent channel. Imports nothing outside src/agent.
 */
import { createServer, type Socket } from "node:net";

/** How long the agent waits for the host to connect before it falls back to frames. */
export const BULK_WAIT_MS = 15_000;

/** Wrong connections accepted before the listener gives up (someone else is knocking). */
const MAX_STRANGERS = 8;

export const BULK_TOKEN = /^[0-9a-f]{64}$/;

/** The host's connection and whatever it sent after the token (the first stdin bytes). */
export interface BulkLink {
  conn: Socket;
  first: Buffer;
}

/** A listener waiting for the host; `link` resolves to its connection, or null on fallback. */
export interface BulkListener {
  port: number;
  link: Promise<BulkLink | null>;
  /** Stops waiting (the host said it uses frames, or the stream ended): `link` becomes null. */
  cancel(): void;
}

/** Listens on every address for the connection that presents `token` (64 hex characters, sent as text). */
export function listenBulk(token: string, waitMs = BULK_WAIT_MS): Promise<BulkListener> {
  const want = Buffer.from(token, "ascii");
  let settle: (l: BulkLink | null) => void = () => {};
  const link = new Promise<BulkLink | null>((r) => (settle = r));
  let strangers = 0;
  let done = false;
  // Half-open: the host ends stdin while stdout still flows.
  const server = createServer({ allowHalfOpen: true }, (conn) => {
    if (done) return void conn.destroy();
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (head.length < want.length) return;
      conn.off("data", onData);
      conn.pause();
      if (done || !sameBytes(head.subarray(0, want.length), want)) {
        conn.destroy();
        if (++strangers >= MAX_STRANGERS) finish(null);
        return;
      }
      conn.setTimeout(0);
      finish({ conn, first: head.subarray(want.length) });
    };
    conn.on("data", onData);
    conn.on("error", () => conn.destroy());
    conn.setTimeout(waitMs, () => conn.destroy());
  });
  const finish = (l: BulkLink | null) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    server.close();
    settle(l);
  };
  const timer = setTimeout(() => finish(null), waitMs);
  return new Promise((resolve, reject) => {
    server.once("error", (err) => {
      finish(null);
      reject(err);
    });
    server.listen(0, "0.0.0.0", () => {
      const addr = server.address();
      resolve({ port: typeof addr === "object" && addr ? addr.port : 0, link, cancel: () => finish(null) });
    });
  });
}

/**
 * The agent's side for one stream: listens, announces the port (or the error) through
 * `announce`, and gives the link or null. `cancel` works before the listener is up too.
 */
export function bulkLink(token: string, announce: (answer: { port: number } | { error: string }) => void, waitMs = BULK_WAIT_MS) {
  let listener: BulkListener | null = null;
  let cancelled = false;
  const link = listenBulk(token, waitMs).then(
    (l) => {
      listener = l;
      if (cancelled) l.cancel();
      else announce({ port: l.port });
      return l.link;
    },
    (err: Error) => {
      announce({ error: err.message });
      return null;
    },
  );
  return {
    link,
    cancel: () => {
      cancelled = true;
      listener?.cancel();
    },
  };
}

/**
 * Compares in time that depends only on the length, like node:crypto's timingSafeEqual, whose
 * module load cost every agent start ~1 ms of CPU for this one call (8.0 -> 7.0 ms for --version).
 */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
