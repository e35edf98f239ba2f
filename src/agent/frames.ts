/**
 * Binary frames for exec streams, carried on the same connection as the agent's JSON lines.
 * A frame starts with a NUL byte, which no JSON line ever does, so one reader tells them
 * apart: `[0x00][type u8][stream u32 BE][length u32 BE][payload]`. The same frames run
 * between the CLI and the daemon's exec socket, where the daemon only renumbers streams.
 *
 * Flow control is by credit: a sender may have at most EXEC_WINDOW data bytes of a stream
 * unacknowledged; the receiver returns CREDIT as it hands bytes on. So neither the agent
 * nor the daemon holds more than a window per stream, however fast a producer is.
 * It imports nothing so it can be compiled into the agent.
 */

/** The agent protocol version (answered by `hello`): 2 carries exec frames, 3 adds bulk channels. */
export const PROTOCOL_VERSION = 3;

/** The oldest agent protocol `vm exec` works with. */
export const EXEC_PROTOCOL = 2;

/** The first agent protocol with bulk channels (OPEN's `bulk` token, BULK frames). */
export const BULK_PROTOCOL = 3;

/** Unacknowledged data bytes one stream may have in flight, each way. */
export const EXEC_WINDOW = 512 * 1024;

/** Largest data payload in one frame. */
export const MAX_CHUNK = 64 * 1024;

/** Largest payload accepted at all; a longer frame is garbage. */
export const MAX_FRAME = 1024 * 1024;

export const FRAME_MAGIC = 0;
const HEADER = 10;

/** Frame types: host to agent, then agent to host (CREDIT goes both ways). */
export const F = {
  OPEN: 1,
  STDIN: 2,
  STDIN_EOF: 3,
  SIGNAL: 4,
  RESIZE: 5,
  CREDIT: 6,
  KILL: 7,
  STDOUT: 16,
  STDERR: 17,
  EXIT: 18,
  ERROR: 19,
  /** Agent to host: {port} of the stream's bulk channel, or {error}; host to agent: use frames after all. */
  BULK: 20,
} as const;

export type FrameType = (typeof F)[keyof typeof F];
const KNOWN = new Set<number>(Object.values(F));

/** One decoded frame. */
export interface Frame {
  type: FrameType;
  stream: number;
  payload: Uint8Array;
}

/** What OPEN carries to the agent. */
export interface ExecOpen {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  tty?: boolean;
  rows?: number;
  cols?: number;
  /** Asks for a bulk channel (pipes only): 64 hex characters the host's connection starts with. */
  bulk?: string;
}

/** What EXIT carries: the exit code, or the signal that ended the process (code 128+n). */
export interface ExecExit {
  code: number;
  signal?: string;
}

/** What ERROR carries: the exec could not run or went away. */
export interface ExecError {
  message: string;
  hint?: string;
  code?: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Encodes one frame. */
export function encodeFrame(type: FrameType, stream: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER + payload.length);
  const view = new DataView(out.buffer);
  out[0] = FRAME_MAGIC;
  out[1] = type;
  view.setUint32(2, stream >>> 0);
  view.setUint32(6, payload.length);
  out.set(payload, HEADER);
  return out;
}

/** Encodes a frame whose payload is JSON. */
export function jsonFrame(type: FrameType, stream: number, value: unknown): Uint8Array {
  return encodeFrame(type, stream, enc.encode(JSON.stringify(value)));
}

/** Encodes a CREDIT frame granting `bytes`. */
export function creditFrame(stream: number, bytes: number): Uint8Array {
  const p = new Uint8Array(4);
  new DataView(p.buffer).setUint32(0, bytes);
  return encodeFrame(F.CREDIT, stream, p);
}

/** The bytes a CREDIT frame grants. */
export function creditOf(frame: Frame): number {
  return frame.payload.length >= 4 ? new DataView(frame.payload.buffer, frame.payload.byteOffset, 4).getUint32(0) : 0;
}

/** A frame's JSON payload, or null when it does not parse. */
export function frameJson<T>(frame: Frame): T | null {
  try {
    return JSON.parse(dec.decode(frame.payload)) as T;
  } catch {
    return null;
  }
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Splits a byte stream into JSON lines and frames. Lines longer than `maxLine` and frames
 * with an unknown type or a huge length are dropped (up to the next newline), so garbage
 * cannot grow memory without bound. Payloads are copies: callers may reuse their buffers.
 */
export function frameSplitter(onLine: (line: string) => void, onFrame: (frame: Frame) => void, maxLine = 4 * 1024 * 1024) {
  const splitter = new FrameSplitter(onLine, onFrame, maxLine);
  return (chunk: Uint8Array | string) => splitter.feed(chunk);
}

/** The state machine behind `frameSplitter`: each `take…` consumes bytes from `at` and returns where it stopped. */
class FrameSplitter {
  private mode: "idle" | "line" | "skip" | "header" | "payload" = "idle";
  private line: Uint8Array[] = [];
  private lineLen = 0;
  private readonly header = new Uint8Array(HEADER);
  private headerLen = 0;
  private parts: Uint8Array[] = [];
  private need = 0;
  private current = { type: 0, stream: 0, len: 0 };

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly onFrame: (frame: Frame) => void,
    private readonly maxLine: number,
  ) {}

  feed(chunk: Uint8Array | string): void {
    const bytes = typeof chunk === "string" ? enc.encode(chunk) : chunk;
    let at = 0;
    while (at < bytes.length) {
      if (this.mode === "idle") this.begin(bytes[at]!);
      if (this.mode === "header") at = this.takeHeader(bytes, at);
      else if (this.mode === "payload") at = this.takePayload(bytes, at);
      else at = this.takeLine(bytes, at);
    }
  }

  /** A NUL byte starts a frame, anything else a line. */
  private begin(first: number): void {
    if (first === FRAME_MAGIC) {
      this.mode = "header";
      this.headerLen = 0;
    } else this.mode = "line";
  }

  private takeHeader(bytes: Uint8Array, at: number): number {
    const take = Math.min(HEADER - this.headerLen, bytes.length - at);
    this.header.set(bytes.subarray(at, at + take), this.headerLen);
    this.headerLen += take;
    if (this.headerLen === HEADER) this.startPayload();
    return at + take;
  }

  private takePayload(bytes: Uint8Array, at: number): number {
    const take = Math.min(this.need, bytes.length - at);
    this.parts.push(bytes.slice(at, at + take));
    this.need -= take;
    if (this.need === 0) this.finishFrame();
    return at + take;
  }

  /** Collects a line (or skips a too-long one or a bad frame) up to and including its newline. */
  private takeLine(bytes: Uint8Array, at: number): number {
    const nl = bytes.indexOf(10, at);
    const end = nl < 0 ? bytes.length : nl;
    if (this.mode === "line") {
      if (this.lineLen + end - at > this.maxLine) this.mode = "skip";
      else {
        this.line.push(bytes.slice(at, end));
        this.lineLen += end - at;
      }
    }
    if (nl < 0) return end;
    if (this.mode === "line") this.endLine();
    this.line = [];
    this.lineLen = 0;
    this.mode = "idle";
    return nl + 1;
  }

  private endLine(): void {
    const text = dec.decode(concat(this.line, this.lineLen)).replace(/\r$/, "");
    this.line = [];
    this.lineLen = 0;
    if (text.trim()) this.onLine(text);
  }

  private startPayload(): void {
    const view = new DataView(this.header.buffer);
    this.current = { type: this.header[1]!, stream: view.getUint32(2), len: view.getUint32(6) };
    if (!KNOWN.has(this.current.type) || this.current.len > MAX_FRAME) {
      this.mode = "skip";
      return;
    }
    this.need = this.current.len;
    this.parts = [];
    this.mode = "payload";
    if (this.need === 0) this.finishFrame();
  }

  private finishFrame(): void {
    const payload = concat(this.parts, this.current.len);
    this.parts = [];
    this.mode = "idle";
    this.onFrame({ type: this.current.type as FrameType, stream: this.current.stream, payload });
  }
}

/**
 * A sender's credit for one stream: `acquire` waits until some is granted and takes at most
 * what was asked; it returns 0 once the gate is closed (the stream ended).
 */
export class CreditGate {
  private available: number;
  private waiters: Array<() => void> = [];
  private closed = false;

  constructor(initial = EXEC_WINDOW) {
    this.available = initial;
  }

  add(bytes: number) {
    this.available += bytes;
    this.wake();
  }

  async acquire(max: number): Promise<number> {
    while (!this.closed && this.available <= 0) await new Promise<void>((r) => this.waiters.push(r));
    if (this.closed) return 0;
    const n = Math.min(max, this.available);
    this.available -= n;
    return n;
  }

  close() {
    this.closed = true;
    this.wake();
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const r of w) r();
  }
}

/** Sends `data` as frames of `type`, each at most MAX_CHUNK and within the gate's credit; false once it closed. */
export async function sendChunked(gate: CreditGate, type: FrameType, stream: number, data: Uint8Array, send: (b: Uint8Array) => void): Promise<boolean> {
  let at = 0;
  while (at < data.length) {
    const n = await gate.acquire(Math.min(MAX_CHUNK, data.length - at));
    if (n === 0) return false;
    send(encodeFrame(type, stream, data.subarray(at, at + n)));
    at += n;
  }
  return true;
}
