/**
 * The host side of the guest agent: one connection (vsock, hybrid vsock or virtio-serial,
 * whatever the driver's `connectAgent` returns) multiplexing requests by id, with a
 * timeout per call and a fresh connection after the old one closes.
 */
import type { ReidentifyParams } from "./reidentify.ts";
import { createConnection, type Socket } from "node:net";
import { BangerError } from "../errors.ts";
import { printable } from "../printable.ts";
import { checkAnswer } from "./answers.ts";
import { EXEC_PROTOCOL, frameSplitter, type Frame } from "./frames.ts";
import { encodeLine, parseResponse, type AgentMethod, type AgentMethods } from "./protocol.ts";

/** Opens a new byte stream to the agent. */
export type AgentConnect = () => Promise<Socket>;

interface Pending {
  method: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Options for AgentClient. */
export interface AgentClientOptions {
  /** Default per-call timeout. */
  timeoutMs?: number;
}

/** One exec stream on the agent connection: frames out, and the frames back through `onFrame`. */
export interface AgentStream {
  id: number;
  send(frame: Uint8Array): void;
  close(): void;
}

interface StreamHandlers {
  onFrame(frame: Frame): void;
  /** The connection went away; the stream is over. */
  onGone(why: string): void;
}

/** A multiplexing client for the guest agent; safe to share between concurrent callers. */
export class AgentClient {
  private socket: Socket | null = null;
  private connecting: Promise<Socket> | null = null;
  private readonly pending = new Map<number, Pending>();
  // Ids keep counting across reconnects and start at random, so a stale answer that a
  // serial port delivers late never matches a newer request.
  private nextId = 1 + Math.floor(Math.random() * 0x3fffffff);
  private readonly timeoutMs: number;
  private readonly streams = new Map<number, StreamHandlers>();
  private nextStream = 1;
  private hello: Promise<void> | null = null;
  /** The protocol version the agent answered `hello` with (0 until a stream was opened). */
  protocol = 0;

  constructor(
    private readonly connect: AgentConnect,
    opts: AgentClientOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 5000;
  }

  /** Calls one agent method; rejects with BangerError timeout/unavailable. */
  async call<M extends AgentMethod>(method: M, opts: { timeoutMs?: number; params?: unknown } = {}): Promise<AgentMethods[M]> {
    const socket = await this.ensure();
    const id = this.nextId++;
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    return new Promise<AgentMethods[M]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new BangerError("timeout", `the guest agent did not answer "${method}" within ${timeoutMs} ms`));
      }, timeoutMs);
      const check = (answer: unknown) => {
        try {
          resolve(checkAnswer(method, answer));
        } catch (err) {
          reject(err as Error);
        }
      };
      this.pending.set(id, { method, resolve: check, reject, timer });
      socket.write(encodeLine(opts.params === undefined ? { id, method } : { id, method, params: opts.params }));
    });
  }

  /** The agent's version, uptime, boot id and hostname. */
  health(opts?: { timeoutMs?: number }) {
    return this.call("health", opts);
  }

  /** Gives a restored copy its own identity (see agent/reidentify.ts). */
  reidentify(params: ReidentifyParams, opts?: { timeoutMs?: number }) {
    return this.call("reidentify", { ...opts, params });
  }

  /** The guest's listening sockets. */
  ports(opts?: { timeoutMs?: number }) {
    return this.call("ports", opts);
  }

  /**
   * Opens an exec stream, after checking once per connection that the agent speaks frames
   * (protocol 2). An older agent answers `hello` with "unknown method": that becomes a clear
   * "too old" error instead of frames it would drop.
   */
  async openStream(handlers: StreamHandlers): Promise<AgentStream> {
    this.hello ??= this.checkHello().catch((err) => {
      this.hello = null;
      throw err;
    });
    await this.hello;
    const socket = await this.ensure();
    const id = this.nextStream++;
    this.streams.set(id, handlers);
    return {
      id,
      send: (frame) => {
        if (this.streams.has(id)) socket.write(frame);
      },
      close: () => void this.streams.delete(id),
    };
  }

  private async checkHello() {
    let version = 0;
    try {
      version = (await this.call("hello")).version;
    } catch (err) {
      if (!(err instanceof BangerError && /unknown method/.test(err.message))) throw err;
    }
    this.protocol = version;
    if (version >= EXEC_PROTOCOL) return;
    throw new BangerError("failed_precondition", "the guest agent is too old for exec; rebuild/upgrade the image", {
      hint:
        "Restart the VM (banger vm restart <vm>) so banger installs its current agent, " +
        "or rebuild the image (banger image build). `banger vm ssh` works meanwhile.",
    });
  }

  /** Closes the connection; pending calls fail. */
  close() {
    this.socket?.destroy();
    this.dropConnection("the agent client was closed");
  }

  private ensure(): Promise<Socket> {
    if (this.socket) return Promise.resolve(this.socket);
    this.connecting ??= this.open().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private async open(): Promise<Socket> {
    let socket: Socket;
    try {
      socket = await this.connect();
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new BangerError("unavailable", `cannot reach the guest agent: ${why}`, { cause: err });
    }
    socket.on(
      "data",
      frameSplitter(
        (line) => this.onLine(line),
        (frame) => this.streams.get(frame.stream)?.onFrame(frame),
      ),
    );
    const gone = (why: string) => () => {
      if (this.socket === socket) this.dropConnection(why);
    };
    socket.on("error", (err) => gone(`the connection to the guest agent failed: ${err.message}`)());
    socket.on("close", gone("the connection to the guest agent closed"));
    // End any partial line an earlier host connection left in the agent's buffer.
    socket.write("\n");
    this.socket = socket;
    return socket;
  }

  private onLine(line: string) {
    const res = parseResponse(line);
    const p = res && this.pending.get(res.id);
    if (!res || !p) return;
    this.pending.delete(res.id);
    clearTimeout(p.timer);
    if (res.ok) p.resolve(res.result);
    else p.reject(new BangerError("unavailable", `the guest agent failed "${p.method}": ${printable(res.error.message).slice(0, 500)}`));
  }

  private dropConnection(why: string) {
    this.socket = null;
    this.hello = null;
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const s of streams) s.onGone(why);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new BangerError("unavailable", why));
    }
  }
}

/** Options for waitForAgent; `now` and `sleep` are seams for tests. */
export interface WaitOptions {
  timeoutMs: number;
  /** The longest pause between attempts; the first ones come sooner (5 ms, doubling), so an agent that is up early is found early. */
  intervalMs: number;
  /** The VM's console log, named in the timeout error so the user knows where to look. */
  logPath: string;
  /** Longest wait for one health answer before asking again. */
  attemptTimeoutMs?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/** What waitForAgent found: the connected client (kept open for reuse) and the first health. */
export interface AgentReady {
  client: AgentClient;
  health: AgentMethods["health"];
  attempts: number;
  elapsedMs: number;
}

/** Polls the agent's health until it answers or the deadline passes. */
export async function waitForAgent(connect: AgentConnect, opts: WaitOptions): Promise<AgentReady> {
  const now = opts.now ?? (() => performance.now());
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const started = now();
  const deadline = started + opts.timeoutMs;
  const client = new AgentClient(connect);
  let attempts = 0;
  let last = "no attempt was made";
  while (now() < deadline) {
    attempts++;
    const remaining = Math.max(1, Math.ceil(deadline - now()));
    try {
      const health = await client.health({ timeoutMs: Math.min(opts.attemptTimeoutMs ?? 3000, remaining) });
      return { client, health, attempts, elapsedMs: now() - started };
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    const left = deadline - now();
    if (left > 0) await sleep(Math.min(5 * 2 ** Math.min(attempts - 1, 16), opts.intervalMs, left));
  }
  client.close();
  throw new BangerError(
    "timeout",
    `the guest agent did not answer within ${Math.round(opts.timeoutMs / 100) / 10}s (last error: ${last}); see the VM log ${opts.logPath}`,
    { hint: `Look at the guest's boot messages in ${opts.logPath}; the image may lack banger-agent or its service.` },
  );
}

/** Connects to a unix socket (a virtio-serial chardev, or an agent run with --unix). */
export function unixConnector(path: string): AgentConnect {
  return () =>
    new Promise<Socket>((resolve, reject) => {
      const socket = createConnection(path);
      socket.once("connect", () => {
        socket.off("error", reject);
        resolve(socket);
      });
      socket.once("error", reject);
    });
}
