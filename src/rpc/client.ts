import { BangerError, isErrorCode } from "../errors.ts";
import { assertTrustedSocket } from "./socket-trust.ts";
import type { Envelope, Method, Params, ProgressEvent } from "./contract.ts";
import { BUILD_HEADER } from "./wire.ts";

export interface CallOptions {
  onEvent?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
  buildId?: string;
  /** Refuse the answer (OtherBuild) unless the daemon that gave it is of this build. */
  requireBuild?: string;
}

/** Thrown when nothing answers on the socket, so callers can start a daemon. */
export class DaemonUnreachable extends Error {}

/** Thrown when the daemon that answered is of another build than the caller required. */
export class OtherBuild extends DaemonUnreachable {}

/** Refuses a socket another user could have planted, before any byte goes to it. */
function checkSocket(socket: string) {
  try {
    assertTrustedSocket(socket);
  } catch (err) {
    if (err instanceof BangerError && err.code === "not_found") throw new DaemonUnreachable(`daemon not reachable at ${socket}: ${err.message}`);
    throw err;
  }
}

/** Makes one RPC call over the daemon's Unix socket (after checking who owns it) and unwraps the envelope. */
export async function call<T = unknown>(
  socket: string,
  method: Method,
  params: Params<Method> | Record<string, unknown> = {},
  opts: CallOptions = {},
): Promise<T> {
  checkSocket(socket);
  let res: Response;
  try {
    res = await fetch("http://banger/rpc", {
      method: "POST",
      unix: socket,
      body: JSON.stringify({ method, params }),
      headers: { "content-type": "application/json", [BUILD_HEADER]: opts.buildId ?? "" },
      signal: opts.signal,
    } as RequestInit);
  } catch (err) {
    if (opts.signal?.aborted) throw new BangerError("cancelled", `${method} was cancelled`);
    throw new DaemonUnreachable(`daemon not reachable at ${socket}: ${(err as Error).message}`);
  }
  const build = res.headers.get(BUILD_HEADER);
  if (opts.requireBuild && build !== opts.requireBuild) {
    await res.body?.cancel();
    throw new OtherBuild(`the daemon at ${socket} is of build ${build ?? "unknown"}, not ${opts.requireBuild}`);
  }
  const type = res.headers.get("content-type") ?? "";
  if (type.includes("ndjson")) return readStream<T>(res, method, opts);
  return unwrap<T>(await parseEnvelope(res, method));
}

async function parseEnvelope(res: Response, method: string): Promise<Envelope> {
  const text = await res.text();
  try {
    return JSON.parse(text) as Envelope;
  } catch {
    throw new BangerError("internal", `daemon sent an unreadable answer to ${method} (HTTP ${res.status})`, { hint: "See `banger daemon logs`." });
  }
}

async function readStream<T>(res: Response, method: string, opts: CallOptions): Promise<T> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    let chunk: Awaited<ReturnType<typeof reader.read>>;
    try {
      chunk = await reader.read();
    } catch (err) {
      if (opts.signal?.aborted) throw new BangerError("cancelled", `${method} was cancelled`);
      throw new BangerError("unavailable", `connection to the daemon broke during ${method}: ${(err as Error).message}`, { hint: "See `banger daemon logs`." });
    }
    if (chunk.done) break;
    buf += decoder.decode(chunk.value, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.trim()) continue;
      const msg = JSON.parse(line) as { event?: ProgressEvent } & Partial<Envelope>;
      if (msg.event) opts.onEvent?.(msg.event);
      else if ("ok" in msg) return unwrap<T>(msg as Envelope);
    }
  }
  throw new BangerError("unavailable", `the daemon closed ${method} without an answer`, { hint: "See `banger daemon logs`." });
}

function unwrap<T>(env: Envelope): T {
  if (env.ok) return env.result as T;
  const e = env.error;
  throw new BangerError(isErrorCode(e?.code) ? e.code : "internal", e?.message ?? "unknown error", { hint: e?.hint, details: e?.details });
}
