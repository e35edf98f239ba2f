/**
 * A tiny stand-in for the guest agent: newline-delimited JSON on a Unix socket.
 * `{"id":1,"method":"health"}` -> `{"id":1,"ok":true,"result":{...}}`; `echo` returns its params.
 */
import { createServer } from "node:net";
import { randomUUID } from "node:crypto";

const bootId = randomUUID();
const started = Date.now();

/** Answers one request line. */
export function answer(line: string): string {
  let req: { id?: unknown; method?: unknown; params?: unknown };
  try {
    req = JSON.parse(line);
  } catch {
    return JSON.stringify({ id: null, ok: false, error: { code: "invalid_argument", message: "request is not JSON" } });
  }
  const id = req.id ?? null;
  if (req.method === "health") {
    return JSON.stringify({ id, ok: true, result: { version: "echo-agent", uptimeMs: Date.now() - started, bootId } });
  }
  if (req.method === "echo") return JSON.stringify({ id, ok: true, result: req.params ?? null });
  return JSON.stringify({ id, ok: false, error: { code: "not_found", message: `unknown method ${String(req.method)}` } });
}

if (import.meta.main) {
  const at = process.argv.indexOf("--unix");
  const path = at >= 0 ? process.argv[at + 1] : undefined;
  if (!path) {
    console.error("usage: echo-agent.ts --unix <socket>");
    process.exit(2);
  }
  createServer((sock) => {
    sock.on("error", () => {});
    let buf = "";
    sock.on("data", (chunk) => {
      buf += chunk.toString("utf8");
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) sock.write(answer(line) + "\n");
      }
    });
  }).listen(path);
}
