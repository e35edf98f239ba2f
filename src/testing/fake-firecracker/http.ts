import { createServer, type Server, type Socket } from "node:net";

/** One parsed API request. */
export interface ApiRequest {
  method: string;
  path: string;
  body: string;
}

/** What the VMM answers: a status and an optional JSON body. */
export interface ApiReply {
  status: number;
  body?: unknown;
}

// micro-http's limits (src/server.rs, src/request.rs).
const MAX_BODY = 51200;
const MAX_CONNECTIONS = 10;

/** Serialises a reply exactly as Firecracker's micro-http does: no reason phrase, its own headers. */
export function formatReply(reply: ApiReply): string {
  let head = `HTTP/1.1 ${reply.status} \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n`;
  if (reply.body === undefined) return `${head}\r\n`;
  const text = JSON.stringify(reply.body);
  head += `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n`;
  return `${head}\r\n${text}`;
}

type Parsed = { request: ApiRequest; rest: Buffer } | { error: string } | null;

/** Parses one request from the front of the buffer; null when more bytes are needed. */
export function parseRequest(buf: Buffer): Parsed {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return buf.length > MAX_BODY ? { error: "Request header is too long." } : null;
  const lines = buf.subarray(0, end).toString("latin1").split("\r\n");
  const [method, target, version] = (lines[0] ?? "").split(" ");
  if (!method || !target || version !== "HTTP/1.1") return { error: "Invalid HTTP request line." };
  let length = 0;
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon < 0) return { error: "Invalid header." };
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === "content-length") length = Number(value);
    if (name === "transfer-encoding" && value.toLowerCase() === "chunked") return { error: "Unsupported transfer encoding." };
  }
  if (!Number.isInteger(length) || length < 0) return { error: "Invalid value. Key:Content-Length; Value: invalid." };
  if (length > MAX_BODY) return { error: "Request payload with size " + length + " is larger than the limit of " + MAX_BODY + " allowed by server." };
  const start = end + 4;
  if (buf.length < start + length) return null;
  const path = target.split("?")[0] ?? target;
  return { request: { method, path, body: buf.subarray(start, start + length).toString("utf8") }, rest: buf.subarray(start + length) };
}

/** Serves the API on a Unix socket, one request at a time per connection, like micro-http. */
export function serveApi(path: string, handle: (req: ApiRequest) => Promise<ApiReply> | ApiReply): Promise<Server> {
  let open = 0;
  const server = createServer((sock: Socket) => {
    open++;
    sock.on("close", () => open--);
    sock.on("error", () => {});
    if (open > MAX_CONNECTIONS) {
      sock.end(formatReply({ status: 503, body: { error: "Too many open connections." } }));
      return;
    }
    let buf: Buffer = Buffer.alloc(0);
    let busy = false;
    const pump = async () => {
      if (busy) return;
      busy = true;
      try {
        for (;;) {
          const parsed = parseRequest(buf);
          if (!parsed) break;
          if ("error" in parsed) {
            sock.end(formatReply({ status: 400, body: { error: parsed.error } }));
            return;
          }
          buf = parsed.rest;
          const reply = await handle(parsed.request);
          if (!sock.destroyed) sock.write(formatReply(reply));
        }
      } finally {
        busy = false;
      }
    };
    sock.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      void pump();
    });
  });
  return new Promise((resolveServer, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolveServer(server));
  });
}
