/**
 * The guest agent's wire protocol, shared by the agent (in the guest) and the host client:
 * newline-delimited JSON, one request `{id, method, params?}` per line, one response per line
 * carrying the same id. It imports nothing so it can be compiled into the agent.
 */

/** The vsock port the agent listens on in the guest. */
export const AGENT_VSOCK_PORT = 1024;

/** The virtio-serial port name the agent serves on where the guest has no vsock. */
export const AGENT_SERIAL_NAME = "org.banger.agent";

/** Where a guest sees the virtio-serial port. */
export const AGENT_SERIAL_PATH = `/dev/virtio-ports/${AGENT_SERIAL_NAME}`;

/** Longest line either side accepts; longer ones are dropped as garbage. */
export const MAX_LINE_BYTES = 4 * 1024 * 1024;

/** What `health` answers. */
export interface AgentHealth {
  version: string;
  uptime_s: number;
  boot_id: string;
  hostname: string;
}

/** One listening socket in the guest, as `ports` reports it. */
export interface ListeningSocket {
  proto: "tcp" | "udp";
  /** The bound address as text: `0.0.0.0`, `::`, `127.0.0.1`, `::ffff:10.0.0.1`. */
  address: string;
  port: number;
  pid?: number;
  /** The short process name (/proc/<pid>/comm). */
  process?: string;
  /** The full command line, arguments joined by spaces. */
  command?: string;
}

/** What `ports` answers. */
export interface AgentPorts {
  sockets: ListeningSocket[];
  /** Set by the host when the answer listed more sockets than it takes: how many it dropped. */
  dropped?: number;
}

/** What `hello` answers: the protocol version (2 carries exec frames) and the agent's build. */
export interface AgentHello {
  version: number;
  agent: string;
}

/** Every method the agent serves and its result type. */
export interface AgentMethods {
  health: AgentHealth;
  ports: AgentPorts;
  hello: AgentHello;
  /** Re-identifies a restored copy (see reidentify.ts): the steps done. */
  reidentify: { done: string[] };
}

export type AgentMethod = keyof AgentMethods;

/** The method names, for validation on the agent side. */
export const AGENT_METHODS: readonly AgentMethod[] = ["health", "ports", "hello", "reidentify"];

/** One request line. */
export interface AgentRequest {
  id: number;
  method: string;
  params?: unknown;
}

/** One response line. */
export type AgentResponse = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: { message: string } };

/** Serialises one message as a line. */
export function encodeLine(message: AgentRequest | AgentResponse): string {
  return `${JSON.stringify(message)}\n`;
}

/**
 * Parses a line into an object with a numeric id, or null for garbage. A line whose start
 * was corrupted (a partial write left behind by a previous host connection on the serial
 * channel) is retried from its last `{"id"`, so one stray fragment costs no request.
 */
function parseWithId(line: string): Record<string, unknown> | null {
  const tryParse = (text: string) => {
    try {
      const v = JSON.parse(text) as unknown;
      return v && typeof v === "object" && typeof (v as { id?: unknown }).id === "number" ? (v as Record<string, unknown>) : null;
    } catch {
      return null;
    }
  };
  const whole = tryParse(line);
  if (whole) return whole;
  const at = line.lastIndexOf('{"id"');
  return at > 0 ? tryParse(line.slice(at)) : null;
}

/** Parses a request line; null when it is not one. */
export function parseRequest(line: string): AgentRequest | null {
  const v = parseWithId(line);
  if (!v || typeof v.method !== "string") return null;
  return { id: v.id as number, method: v.method, params: v.params };
}

/** Parses a response line; null when it is not one. */
export function parseResponse(line: string): AgentResponse | null {
  const v = parseWithId(line);
  if (!v) return null;
  if (v.ok === true && "result" in v) return { id: v.id as number, ok: true, result: v.result };
  const err = v.error as { message?: unknown } | undefined;
  if (v.ok === false && err && typeof err.message === "string") {
    return { id: v.id as number, ok: false, error: { message: err.message } };
  }
  return null;
}

/**
 * Splits a byte stream into lines. Over-long lines are dropped whole (up to the next
 * newline) so a flood of garbage cannot grow memory without bound.
 */
export function lineSplitter(onLine: (line: string) => void, maxBytes = MAX_LINE_BYTES) {
  const decoder = new TextDecoder();
  let buf = "";
  let skipping = false;
  return (chunk: Uint8Array | string) => {
    buf += typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true });
    let nl = buf.indexOf("\n");
    while (nl >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
      if (!skipping && line.trim()) onLine(line);
      skipping = false;
      nl = buf.indexOf("\n");
    }
    if (buf.length > maxBytes) {
      buf = "";
      skipping = true;
    }
  };
}
