import { connect, type Socket } from "node:net";
import { BangerError } from "../../errors";

/** A QMP reply: `return` on success, `error` on failure. */
interface QmpReply {
  return?: unknown;
  error?: { class: string; desc: string };
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

/**
 * A minimal QMP client over QEMU's unix socket. QEMU serves one QMP client at a time,
 * so callers open, issue a command or two and close (see `qmpCall`). Every wait is bounded.
 */
export class QmpClient {
  private buf = "";
  private readonly pending: Pending[] = [];
  private greeted: Pending | null = null;
  private closed: Error | null = null;

  private constructor(
    private readonly sock: Socket,
    private readonly path: string,
  ) {
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => this.onData(chunk));
    sock.on("error", (err) => this.fail(err));
    sock.on("close", () => this.fail(new Error("QMP connection closed")));
  }

  /** Connects, waits for the greeting and negotiates capabilities within `timeoutMs`. */
  static async open(path: string, timeoutMs: number): Promise<QmpClient> {
    const sock = connect(path);
    const client = new QmpClient(sock, path);
    try {
      await withTimeout(new Promise((resolve, reject) => (client.greeted = { resolve, reject })), timeoutMs, `QMP greeting on ${path}`);
      await client.execute("qmp_capabilities", undefined, timeoutMs);
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /** Runs one command; rejects with a BangerError on a QMP error, a closed socket or a timeout. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = 2000): Promise<unknown> {
    if (this.closed) return Promise.reject(this.unavailable(this.closed));
    const reply = new Promise<unknown>((resolve, reject) => this.pending.push({ resolve, reject }));
    this.sock.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    return withTimeout(reply, timeoutMs, `QMP ${command} on ${this.path}`).catch((err) => {
      // A timed-out reply would answer the next command; the connection is unusable now.
      this.close();
      throw err;
    });
  }

  /** Closes the connection; pending calls fail. */
  close(): void {
    this.fail(new Error("QMP connection closed by banger"));
    this.sock.destroy();
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    for (let nl = this.buf.indexOf("\n"); nl >= 0; nl = this.buf.indexOf("\n")) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: QmpReply & { QMP?: unknown; event?: string };
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    if (msg.QMP !== undefined) {
      this.greeted?.resolve(undefined);
      this.greeted = null;
      return;
    }
    if (msg.event !== undefined) return; // asynchronous events are not needed by the driver
    const waiter = this.pending.shift();
    if (!waiter) return;
    if (msg.error) waiter.reject(new BangerError("internal", `QMP error ${msg.error.class}: ${msg.error.desc}`));
    else waiter.resolve(msg.return);
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.closed = err;
    const all = [...this.pending.splice(0), ...(this.greeted ? [this.greeted] : [])];
    this.greeted = null;
    for (const p of all) p.reject(this.unavailable(err));
  }

  private unavailable(err: Error): BangerError {
    return new BangerError("unavailable", `QEMU's QMP socket ${this.path} did not answer: ${err.message}`, {
      cause: err,
      hint: "The VM's QEMU process may have exited; see the VM's vmm log (banger vm logs).",
    });
  }
}

/** Opens, runs one command and closes; the whole call is bounded by `timeoutMs`. */
export async function qmpCall(path: string, command: string, timeoutMs: number, args?: Record<string, unknown>): Promise<unknown> {
  const client = await QmpClient.open(path, timeoutMs);
  try {
    return await client.execute(command, args, timeoutMs);
  } finally {
    client.close();
  }
}

/** Rejects with a `timeout` BangerError when `p` does not settle within `ms`. */
function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new BangerError("timeout", `${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
