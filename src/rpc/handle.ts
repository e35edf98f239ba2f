import * as v from "valibot";
import { BangerError, toBangerError } from "../errors.ts";
import type { CallContext } from "../vm/model.ts";
import { METHODS, MAX_BODY_BYTES, STREAMING, isMethod, type Envelope, type Method, type Params, type Result, type ProgressEvent } from "./contract.ts";

/** What a handler receives besides its params: progress reporting and cancellation (the domain's CallContext). */
export type { CallContext };

export type Handler<M extends Method> = (params: Params<M>, ctx: CallContext) => Promise<Result<M>>;
export type Handlers = { [M in Method]?: Handler<M> };

export interface HandleDeps {
  handlers: Handlers;
  /** Logs unexpected errors with their stack; they never cross the socket. */
  logError(err: unknown, method: string): void;
  /** Called around every call so the daemon knows when it is idle. */
  track?: { begin(): void; end(): void };
  /** Keep-alive period of streaming answers (default HEARTBEAT_MS). */
  heartbeatMs?: number;
}

const json = (body: Envelope, status = 200) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

const fail = (err: BangerError, status = 200) => json({ ok: false, error: err.toJSON() }, status);

/** Serves one RPC request: POST /rpc {method, params}. Usable without a socket (tests). */
export async function handle(request: Request, deps: HandleDeps): Promise<Response> {
  if (request.method !== "POST" || new URL(request.url).pathname !== "/rpc") {
    return fail(new BangerError("invalid_argument", `no such endpoint: ${request.method} ${new URL(request.url).pathname}`, { hint: "POST /rpc" }), 404);
  }
  const parsed = await readCall(request);
  if (parsed instanceof BangerError) return fail(parsed);
  const { method, params } = parsed;
  const handler = deps.handlers[method] as Handler<Method> | undefined;
  if (!handler) {
    return fail(new BangerError("not_available", `${method} is not available yet in this build`, { hint: "Upgrade banger." }));
  }
  deps.track?.begin();
  if (STREAMING.has(method)) return stream(handler, params, request.signal, deps);
  try {
    const result = await handler(params, { progress: () => {}, signal: request.signal });
    return json({ ok: true, result: result ?? null });
  } catch (err) {
    return fail(wire(err, method, deps));
  } finally {
    deps.track?.end();
  }
}

async function readCall(request: Request): Promise<{ method: Method; params: Params<Method> } | BangerError> {
  const length = Number(request.headers.get("content-length") ?? "0");
  if (length > MAX_BODY_BYTES) return new BangerError("invalid_argument", `request body too large (${length} bytes; limit ${MAX_BODY_BYTES})`);
  let text: string;
  try {
    text = await request.text();
  } catch {
    return new BangerError("invalid_argument", "could not read the request body");
  }
  if (text.length > MAX_BODY_BYTES) return new BangerError("invalid_argument", `request body too large (limit ${MAX_BODY_BYTES} bytes)`);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return new BangerError("invalid_argument", "request body is not valid JSON", { hint: 'Send {"method": ..., "params": {...}}.' });
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) return new BangerError("invalid_argument", "request body must be a JSON object");
  const { method, params } = body as { method?: unknown; params?: unknown };
  if (!isMethod(method)) {
    return new BangerError("invalid_argument", `method: unknown method ${JSON.stringify(method)?.slice(0, 80)}`, {
      hint: "See src/rpc/contract.ts for the method list.",
    });
  }
  // valibot takes an array for an object with no required keys, so shape is checked first.
  if (params !== undefined && (typeof params !== "object" || params === null || Array.isArray(params))) {
    return new BangerError("invalid_argument", `${method}: params: expected an object`);
  }
  const result = v.safeParse(METHODS[method], params ?? {}, { abortEarly: false });
  if (!result.success) return new BangerError("invalid_argument", describeIssues(method, result.issues));
  return { method, params: result.output as Params<Method> };
}

/** Names each offending field: "vm.create: cpus: must be at least 1". */
export function describeIssues(method: string, issues: v.BaseIssue<unknown>[]): string {
  const parts = issues.map((issue) => {
    const path = (issue.path ?? []).map((p) => String((p as { key: unknown }).key)).join(".") || "params";
    return issue.expected === "never" ? `${path}: unknown field` : `${path}: ${issue.message}`;
  });
  return `${method}: ${parts.join("; ")}`;
}

function wire(err: unknown, method: string, deps: HandleDeps): BangerError {
  const be = toBangerError(err);
  if (be.code === "internal") deps.logError(err, method);
  return be;
}

/** Runs a streaming handler: its events, then its answer, with a blank line now and then. */
function run(handler: Handler<Method>, params: Params<Method>, signal: AbortSignal, send: (obj: unknown) => void, deps: HandleDeps, close: () => void) {
  // A blank line now and then: a step that says nothing for minutes (a kernel compile)
  // must not look like a dead daemon to the client's idle timer.
  const beat = setInterval(() => send(null), deps.heartbeatMs ?? HEARTBEAT_MS);
  handler(params, { progress: (event) => send({ event }), signal })
    .then((result) => send({ ok: true, result: result ?? null }))
    .catch((err) => send({ ok: false, error: wire(err, "stream", deps).toJSON() }))
    .finally(() => {
      clearInterval(beat);
      deps.track?.end();
      try {
        close();
      } catch {}
    });
}

/** How often a streaming answer sends a keep-alive blank line while its handler works. */
export const HEARTBEAT_MS = 15_000;

function stream(handler: Handler<Method>, params: Params<Method>, signal: AbortSignal, deps: HandleDeps): Response {
  const encoder = new TextEncoder();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const send = (obj: unknown) => {
    try {
      controller.enqueue(encoder.encode(obj === null ? "\n" : `${JSON.stringify(obj)}\n`));
    } catch {
      // the client went away; the handler sees the abort through its signal
    }
  };
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
      // A first (blank) line, and the handler only on the next turn: the headers are then on
      // their way before any work starts, so a daemon that dies mid-call breaks an answer the
      // client is reading and never looks like a call that did not arrive (which the client
      // would send again).
      send(null);
      setTimeout(() => run(handler, params, signal, send, deps, () => controller.close()), 0);
    },
  });
  return new Response(body, { headers: { "content-type": "application/x-ndjson" } });
}
