/**
 * banger-agent: the small program inside every guest that answers the host's health and
 * ports calls and runs `vm exec` streams. It serves the line protocol of src/agent/protocol.ts on vsock, a
 * virtio-serial port or (for tests and the fake Firecracker) a unix socket.
 * It imports only src/agent/* so it stays tiny and compiles on its own.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { AGENT_SERIAL_PATH, AGENT_VSOCK_PORT, encodeLine } from "./agent/protocol.ts";
import { findSerialPort, openSerialPort, serveSerial } from "./agent/serial.ts";
import { guestReidentifyDeps, pretendReidentifyDeps } from "./agent/reidentify.ts";
import { createHandler, procDeps, serveConnection, type Handler } from "./agent/server.ts";
import { serveVsock, vsockRoundTrip } from "./agent/vsock.ts";

declare const BANGER_AGENT_VERSION: string;
/** Injected by the build with --define; "dev" when run from source. */
const VERSION = typeof BANGER_AGENT_VERSION === "string" ? BANGER_AGENT_VERSION : "dev";

const USAGE = `usage: banger-agent [--auto] [--vsock [PORT]] [--serial PATH] [--unix PATH] [--version]`;

function log(line: string) {
  process.stderr.write(`banger-agent: ${line}\n`);
}

function onConnection(handler: Handler) {
  return (conn: Socket) => {
    const served = serveConnection(handler, (data) => void conn.write(data));
    conn.on("data", (chunk: Uint8Array) => served.feed(chunk));
    conn.on("close", () => served.close());
    conn.on("error", () => conn.destroy());
  };
}

async function serveUnix(path: string, handler: Handler) {
  rmSync(path, { force: true });
  const server = createServer(onConnection(handler));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  log(`${VERSION} serving on unix:${path}`);
}

async function startVsock(port: number, handler: Handler) {
  await serveVsock(port, onConnection(handler));
  log(`${VERSION} serving on vsock:${port}`);
}

async function startSerial(path: string, handler: Handler) {
  const port = await openSerialPort(path);
  log(`${VERSION} serving on serial:${path}`);
  void serveSerial(port, handler).catch((err) => log(`serial ${path} stopped: ${err}`));
}

/** --auto: vsock where the guest has it, and the serial port where the VMM gave one. */
async function startAuto(handler: Handler) {
  const started: string[] = [];
  if (existsSync("/dev/vsock")) {
    try {
      await startVsock(AGENT_VSOCK_PORT, handler);
      started.push("vsock");
    } catch (err) {
      log(`vsock unavailable: ${err instanceof Error ? err.message : err}`);
    }
  }
  const serial = findSerialPort();
  if (serial) {
    await startSerial(serial, handler);
    started.push("serial");
  }
  if (!started.length) throw new Error(`neither /dev/vsock nor ${AGENT_SERIAL_PATH} is usable`);
}

/** Hidden self-test: asks an agent over vsock for health and prints the answer line. */
function probeVsock(cid: string | undefined, port: string | undefined): number {
  const line = vsockRoundTrip(Number(cid ?? 1), Number(port ?? AGENT_VSOCK_PORT), encodeLine({ id: 1, method: "health" }));
  process.stdout.write(`${line}\n`);
  return line.includes('"ok":true') ? 0 : 1;
}

/**
 * What --unix serves: no re-identify on a host, except for a pretend guest (the fake Firecracker's),
 * whose identity lives in files under BANGER_AGENT_PRETEND_ROOT.
 */
function testDeps(pretendRoot: string | undefined) {
  const deps = procDeps(VERSION);
  if (!pretendRoot) return deps;
  const named = () => {
    try {
      return readFileSync(`${pretendRoot}/etc/hostname`, "utf8").trim();
    } catch {
      return "";
    }
  };
  return { ...deps, hostname: () => named() || deps.hostname(), reidentify: pretendReidentifyDeps(pretendRoot) };
}

async function main(argv: string[]): Promise<number | null> {
  // Only the guest modes may change the machine's identity; --unix serves tests on a host.
  const handler = createHandler({ ...procDeps(VERSION), reidentify: guestReidentifyDeps() });
  const testHandler = createHandler(testDeps(process.env.BANGER_AGENT_PRETEND_ROOT));
  if (!argv.length) argv = ["--auto"];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => argv[++i];
    if (arg === "--version") return (process.stdout.write(`${VERSION}\n`), 0);
    else if (arg === "--probe-vsock") return probeVsock(next(), next());
    else if (arg === "--unix") await serveUnix(next() ?? "", testHandler);
    else if (arg === "--serial") await startSerial(next() ?? "", handler);
    else if (arg === "--auto") await startAuto(handler);
    else if (arg === "--vsock") {
      const port = argv[i + 1] && /^\d+$/.test(argv[i + 1]!) ? Number(next()) : AGENT_VSOCK_PORT;
      await startVsock(port, handler);
    } else {
      process.stderr.write(`${USAGE}\n`);
      return 2;
    }
  }
  return null;
}

process.on("SIGTERM", () => process.exit(0));
// Not a top-level await, so the agent compiles to bytecode and starts in a few milliseconds.
main(process.argv.slice(2)).then(
  (code) => {
    if (code !== null) process.exit(code);
  },
  (err) => {
    log(err instanceof Error ? err.message : String(err));
    process.exit(1);
  },
);
