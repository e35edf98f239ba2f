import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { webProbe } from "./port-probe.ts";

const dir = mkdtempSync(join(tmpdir(), "banger-probe-"));
let https: ReturnType<typeof Bun.serve>;
let http: ReturnType<typeof Bun.serve>;
let raw: Server;
let rawPort = 0;

beforeAll(async () => {
  const gen = Bun.spawnSync(
    [
      "openssl",
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=t1.vm",
      "-keyout",
      join(dir, "k.pem"),
      "-out",
      join(dir, "c.pem"),
    ],
    { stderr: "pipe" },
  );
  if (gen.exitCode !== 0) throw new Error(gen.stderr.toString());
  const tls = { key: readFileSync(join(dir, "k.pem"), "utf8"), cert: readFileSync(join(dir, "c.pem"), "utf8") };
  https = Bun.serve({ port: 0, hostname: "127.0.0.1", tls, fetch: () => new Response("s") });
  http = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("p") });
  // A TCP service that is neither: it greets like SSH.
  raw = createServer((c) => c.end("SSH-2.0-OpenSSH_9.2\r\n"));
  await new Promise<void>((r) => raw.listen(0, "127.0.0.1", () => r()));
  rawPort = (raw.address() as { port: number }).port;
});

afterAll(() => {
  https?.stop(true);
  http?.stop(true);
  raw?.close();
  rmSync(dir, { recursive: true, force: true });
});

test("webProbe: HTTPS, HTTP, neither, and a closed port", async () => {
  const probe = webProbe(1000);
  expect(await probe("127.0.0.1", https.port!)).toBe("https");
  expect(await probe("127.0.0.1", http.port!)).toBe("http");
  expect(await probe("127.0.0.1", rawPort)).toBeNull();
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, "127.0.0.1", () => r()));
  const port = (closed.address() as { port: number }).port;
  closed.close();
  expect(await probe("127.0.0.1", port)).toBeNull();
});
