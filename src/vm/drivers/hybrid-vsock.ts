import { createConnection, type Socket } from "node:net";
import { BangerError } from "../../errors.ts";
import { systemClock, type Clock } from "./process.ts";

/** Bounds for dialing a guest port through Firecracker's hybrid vsock. */
export interface DialOptions {
  /** Total time to keep retrying (the guest agent may not be listening yet). */
  timeoutMs?: number;
  /** Longest pause between attempts; the first are 5 ms, so a guest that is nearly up is not waited for a whole interval. */
  retryMs?: number;
  /** How long to wait for the `OK <port>` line on one attempt. */
  ackTimeoutMs?: number;
  clock?: Clock;
}

/** Parses Firecracker's acknowledgement `OK <host_port>`; null when it is anything else. */
export function parseAck(line: string): number | null {
  const m = /^OK (\d+)$/.exec(line.trim());
  return m ? Number(m[1]) : null;
}

/** One attempt: connect, send CONNECT, read the OK line. Resolves the socket with any extra bytes put back. */
export function dialOnce(udsPath: string, port: number, ackTimeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(udsPath);
    let buf = Buffer.alloc(0);
    const fail = (why: string) => {
      clearTimeout(timer);
      sock.destroy();
      reject(new Error(why));
    };
    const timer = setTimeout(() => fail(`no acknowledgement within ${ackTimeoutMs} ms`), ackTimeoutMs);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf("\n");
      if (nl < 0) return buf.length > 64 ? fail("acknowledgement line too long") : undefined;
      const line = buf.subarray(0, nl).toString("latin1");
      if (parseAck(line) === null) return fail(`unexpected acknowledgement ${JSON.stringify(line)}`);
      clearTimeout(timer);
      sock.off("data", onData);
      sock.off("error", onError);
      sock.off("close", onClose);
      sock.pause();
      const rest = buf.subarray(nl + 1);
      if (rest.length) sock.unshift(rest);
      resolve(sock);
      // Paused so no byte is lost before the caller listens; a listener added to an explicitly
      // paused stream does not resume it, so resume once the caller's continuation has run.
      setImmediate(() => sock.resume());
    };
    const onError = (err: Error) => fail(err.message);
    // Firecracker closes the connection when nothing listens on the guest port.
    const onClose = () => fail("connection closed before acknowledgement (nothing listening on that guest port yet)");
    sock.on("data", onData);
    sock.on("error", onError);
    sock.on("close", onClose);
    sock.once("connect", () => sock.write(`CONNECT ${port}\n`));
  });
}

/** Dials a guest vsock port through `uds_path`, retrying until the guest listens or the bound passes. */
export async function dialHybridVsock(udsPath: string, port: number, opts: DialOptions = {}): Promise<Socket> {
  const clock = opts.clock ?? systemClock;
  const deadline = clock.now() + (opts.timeoutMs ?? 20_000);
  const maxPause = opts.retryMs ?? 100;
  let last = "no attempt made";
  for (let attempt = 0; ; attempt++) {
    try {
      return await dialOnce(udsPath, port, opts.ackTimeoutMs ?? 1000);
    } catch (err) {
      last = (err as Error).message;
    }
    // Every 5 ms for the first ~50 ms (a guest agent comes up within tens of ms of a fast
    // boot), then doubling to maxPause, so slow boots are not flooded with attempts.
    const pause = Math.min(attempt < 10 ? 5 : 5 * 2 ** Math.min(attempt - 9, 16), maxPause);
    if (clock.now() + pause > deadline) break;
    await clock.sleep(pause);
  }
  throw new BangerError("unavailable", `Could not reach guest vsock port ${port} through ${udsPath}: ${last}`, {
    hint: "The guest agent may not have started; check the VM's console log (banger vm logs).",
  });
}
