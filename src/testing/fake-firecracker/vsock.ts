import { createConnection, createServer, type Server, type Socket } from "node:net";

// Firecracker's muxer hands out host-side ports from 2^30 upwards (muxer.rs).
const FIRST_HOST_PORT = 2 ** 30;
// The muxer reads at most 32 bytes looking for the CONNECT line.
const MAX_CONNECT_LINE = 32;

/** Parses a host-initiated `CONNECT <port>\n` request (case-insensitive); null when malformed. */
export function parseConnect(line: string): number | null {
  const m = /^connect (\d{1,10})$/i.exec(line.trim());
  if (!m) return null;
  const port = Number(m[1]);
  return port <= 0xffffffff ? port : null;
}

/** Bridges host connections on uds_path to guest listeners, the way Firecracker's hybrid vsock does. */
export class HybridVsockBridge {
  private nextHostPort = FIRST_HOST_PORT;
  private readonly conns = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly udsPath: string,
  ) {}

  /** Binds uds_path (the caller has checked that it does not exist). */
  static listen(udsPath: string, guestListener: (port: number) => string | null): Promise<HybridVsockBridge> {
    return new Promise((resolve, reject) => {
      let bridge: HybridVsockBridge;
      const server = createServer((host) => bridge.accept(host, guestListener));
      bridge = new HybridVsockBridge(server, udsPath);
      server.once("error", reject);
      server.listen(udsPath, () => resolve(bridge));
    });
  }

  private accept(host: Socket, guestListener: (port: number) => string | null): void {
    this.conns.add(host);
    host.on("close", () => this.conns.delete(host));
    host.on("error", () => {});
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const nl = buf.indexOf("\n");
      if (nl < 0 && buf.length < MAX_CONNECT_LINE) return;
      host.off("data", onData);
      host.pause();
      const port = nl >= 0 ? parseConnect(buf.subarray(0, nl).toString("latin1")) : null;
      const target = port === null ? null : guestListener(port);
      // Nothing listening in the guest: Firecracker terminates the host connection.
      if (!target) return void host.destroy();
      this.connectGuest(host, target, buf.subarray(nl + 1));
    };
    host.on("data", onData);
  }

  private connectGuest(host: Socket, target: string, early: Buffer): void {
    const guest = createConnection(target);
    this.conns.add(guest);
    guest.on("close", () => {
      this.conns.delete(guest);
      host.destroy();
    });
    guest.on("error", () => host.destroy());
    host.on("close", () => guest.destroy());
    guest.once("connect", () => {
      host.write(`OK ${this.nextHostPort++}\n`);
      if (early.length) guest.write(early);
      host.pipe(guest);
      guest.pipe(host);
      host.resume();
    });
  }

  /** Stops listening and drops every bridged connection. */
  close(): void {
    this.server.close();
    for (const c of this.conns) c.destroy();
  }
}
