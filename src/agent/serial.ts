/**
 * The agent on a virtio-serial port: one long-lived character device the host attaches to
 * and detaches from. While no host is attached, reads return 0 at once and writes block, so
 * the agent polls gently, forgets partial lines at each detach, and only ever writes
 * responses (never unprompted output that would block it).
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { AGENT_SERIAL_NAME, AGENT_SERIAL_PATH } from "./protocol.ts";
import { serveConnection, type Handler } from "./server.ts";

/**
 * Where the agent's serial port is: udev's /dev/virtio-ports/<name> link, or, in a guest
 * without udev, the /dev/vportNpM device whose sysfs name matches. Null when absent.
 */
export function findSerialPort(name = AGENT_SERIAL_NAME, sysDir = "/sys/class/virtio-ports", devDir = "/dev"): string | null {
  if (name === AGENT_SERIAL_NAME && existsSync(AGENT_SERIAL_PATH)) return AGENT_SERIAL_PATH;
  let ports: string[] = [];
  try {
    ports = readdirSync(sysDir);
  } catch {
    return null;
  }
  for (const port of ports) {
    let portName = "";
    try {
      portName = readFileSync(`${sysDir}/${port}/name`, "utf8").trim();
    } catch {
      continue;
    }
    if (portName === name && existsSync(`${devDir}/${port}`)) return `${devDir}/${port}`;
  }
  return null;
}

/** The two operations the agent needs from the port. */
export interface SerialPort {
  /** Reads into buf; 0 means no host is attached right now. */
  read(buf: Uint8Array): Promise<number>;
  write(data: string | Uint8Array): Promise<void>;
  close(): Promise<void>;
}

/** Opens the character device read/write (the kernel allows one opener at a time). */
export async function openSerialPort(path: string): Promise<SerialPort> {
  const fh = await open(path, "r+");
  return {
    read: async (buf) => (await fh.read(buf, 0, buf.length, null)).bytesRead,
    write: async (data) => {
      // A character device may take part of a write; loop until all of it is out (and wait
      // out EAGAIN, should the file have been made non-blocking).
      const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
      for (let at = 0; at < bytes.length; ) {
        try {
          at += (await fh.write(bytes, at, bytes.length - at, null)).bytesWritten;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    },
    close: () => fh.close(),
  };
}

/** Options for serveSerial; tests shorten the idle poll and stop the loop. */
export interface SerialOptions {
  idleMs?: number;
  sleep?: (ms: number) => Promise<void>;
  stopped?: () => boolean;
}

/** Serves requests on the port until `stopped()` says so (forever in the guest). */
export async function serveSerial(port: SerialPort, handler: Handler, opts: SerialOptions = {}): Promise<void> {
  const idleMs = opts.idleMs ?? 200;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const stopped = opts.stopped ?? (() => false);
  // Writes go one after another; a failed write (host gone) is dropped, the host retries.
  let chain = Promise.resolve();
  const write = (data: string | Uint8Array) => {
    chain = chain.then(() => port.write(data)).catch(() => {});
  };
  let conn = serveConnection(handler, write);
  const buf = new Uint8Array(64 * 1024);
  while (!stopped()) {
    let n: number;
    try {
      n = await port.read(buf);
    } catch {
      n = 0;
    }
    if (n > 0) {
      conn.feed(buf.subarray(0, n));
      continue;
    }
    // Host detached: whatever partial line it left behind is garbage now, and its execs end.
    conn.close();
    conn = serveConnection(handler, write);
    await sleep(idleMs);
  }
  await chain;
}
