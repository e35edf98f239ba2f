import dgram from "node:dgram";
import net from "node:net";
import { BangerError } from "../errors.ts";
import { answer, decodeIncoming, encodeReply, needsForward, servFail } from "./dns.ts";

/** What `startDnsServer` needs. */
export interface DnsServerOptions {
  /** `HOST:PORT` (`[v6]:PORT` too); port 0 picks a free port (tests). */
  listen: string;
  /** The current records (VM name → IPv4), read on every query so they follow the lifecycle. */
  records: () => ReadonlyMap<string, string>;
  /** When set, queries outside `.vm` are forwarded here (`IP` or `IP:PORT`); otherwise REFUSED. */
  upstream?: string[];
  /** Per-upstream wait before trying the next one (default 2000 ms). */
  upstreamTimeoutMs?: number;
  /** The config key that sets `listen`, named in errors (default `dns_listen`). */
  configKey?: string;
  log?: (msg: string) => void;
}

/** A running DNS server on UDP and TCP. */
export interface DnsServer {
  address: { host: string; port: number };
  close(): Promise<void>;
}

/** Splits `HOST:PORT` / `[V6]:PORT`; throws an invalid_argument error naming the config key. */
export function parseHostPort(text: string, defaultPort: number | null, key = "dns_listen"): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:]+)(?::(\d+))?$/.exec(text);
  const port = m?.[2] === undefined ? defaultPort : Number(m[2]);
  if (!m || port === null || !Number.isInteger(port) || port < 0 || port > 65535 || net.isIP(m[1]!) === 0) {
    throw new BangerError("invalid_argument", `invalid address "${text}" for ${key}: expected IP:PORT such as 127.0.0.1:42069`, {
      hint: `Fix ${key} in config.toml`,
    });
  }
  return { host: m[1]!, port };
}

/** Sends one query to one upstream over UDP; resolves null on timeout or socket error. */
export function exchangeUdp(host: string, port: number, query: Buffer, timeoutMs: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4");
    // A fresh id and source port per query make spoofed replies hard to land.
    const id = Math.floor(Math.random() * 0x10000);
    const out = Buffer.from(query);
    out.writeUInt16BE(id, 0);
    let done = false;
    const finish = (r: Buffer | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        sock.close();
      } catch {}
      if (r) r.writeUInt16BE(query.readUInt16BE(0), 0);
      resolve(r);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    sock.on("error", () => finish(null));
    sock.on("message", (msg, rinfo) => {
      if (rinfo.address === host && rinfo.port === port && msg.length >= 12 && msg.readUInt16BE(0) === id) finish(Buffer.from(msg));
    });
    sock.send(out, port, host, (err) => err && finish(null));
  });
}

/** Builds a forwarder over the upstreams, tried in order; null when all fail. */
function makeForwarder(upstreams: string[], timeoutMs: number) {
  const targets = upstreams.map((u) => parseHostPort(u, 53, "upstream DNS server"));
  return async (query: Buffer): Promise<Buffer | null> => {
    for (const t of targets) {
      const r = await exchangeUdp(t.host, t.port, query, timeoutMs);
      if (r) return r;
    }
    return null;
  };
}

const MAX_IN_FLIGHT_FORWARDS = 256;

/** The per-message pipeline shared by UDP and TCP: never throws, null means send nothing. */
function makeResponder(opts: DnsServerOptions, log: (m: string) => void) {
  const forward = opts.upstream?.length ? makeForwarder(opts.upstream, opts.upstreamTimeoutMs ?? 2000) : null;
  let inFlight = 0;
  return async (raw: Buffer): Promise<Buffer | null> => {
    try {
      const inc = decodeIncoming(raw);
      if (inc.kind === "drop") return null;
      if (inc.kind === "reply") return inc.bytes;
      const q = inc.packet;
      if (forward && needsForward(q)) {
        if (inFlight >= MAX_IN_FLIGHT_FORWARDS) return encodeReply(servFail(q), raw);
        inFlight++;
        try {
          return (await forward(raw)) ?? encodeReply(servFail(q), raw);
        } finally {
          inFlight--;
        }
      }
      return encodeReply(answer(q, opts.records(), { recursion: forward !== null }), raw);
    } catch (err) {
      log(`dns: dropped a query: ${(err as Error)?.message ?? err}`);
      return null;
    }
  };
}

function listenError(err: NodeJS.ErrnoException, listen: string, key: string): BangerError {
  if (err.code === "EADDRINUSE") {
    return new BangerError("unavailable", `DNS address ${listen} is already in use by another program`, {
      hint: `Stop whatever listens on ${listen} (see \`ss -lunp\`), or set ${key} in config.toml to a free address`,
      cause: err,
    });
  }
  if (err.code === "EADDRNOTAVAIL") {
    return new BangerError("unavailable", `DNS address ${listen} is not an address of this host`, {
      hint: `Set ${key} in config.toml to a local address, or run \`sudo banger host setup\` if it is the bridge address`,
      cause: err,
    });
  }
  return new BangerError("unavailable", `cannot listen for DNS on ${listen}: ${err.message}`, {
    hint: `Check ${key} in config.toml`,
    cause: err,
  });
}

function bindUdp(host: string, port: number): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket({ type: net.isIPv6(host) ? "udp6" : "udp4", reuseAddr: false });
    sock.once("error", reject);
    sock.bind(port, host, () => {
      sock.off("error", reject);
      resolve(sock);
    });
  });
}

function listenTcp(server: net.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port, exclusive: true }, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/** Serves one TCP connection: 2-byte length-prefixed messages, pipelined (RFC 7766). */
function serveTcpConnection(conn: net.Socket, respond: (raw: Buffer) => Promise<Buffer | null>) {
  let pending: Buffer = Buffer.alloc(0);
  conn.setTimeout(10_000, () => conn.destroy());
  conn.on("error", () => conn.destroy());
  conn.on("data", (chunk: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    while (pending.length >= 2) {
      const len = pending.readUInt16BE(0);
      if (pending.length < 2 + len) break;
      const msg = Buffer.from(pending.subarray(2, 2 + len));
      pending = pending.subarray(2 + len);
      void respond(msg).then((r) => {
        if (!r || conn.destroyed) return;
        const frame = Buffer.alloc(2 + r.length);
        frame.writeUInt16BE(r.length, 0);
        r.copy(frame, 2);
        conn.write(frame);
      });
    }
  });
}

/** Starts the DNS server on UDP and TCP at `listen`; throws a BangerError naming the address when it cannot bind. */
export async function startDnsServer(opts: DnsServerOptions): Promise<DnsServer> {
  const key = opts.configKey ?? "dns_listen";
  const log = opts.log ?? (() => {});
  const { host, port } = parseHostPort(opts.listen, null, key);
  const respond = makeResponder(opts, log);
  const conns = new Set<net.Socket>();
  const tcp = net.createServer((conn) => {
    conns.add(conn);
    conn.on("close", () => conns.delete(conn));
    serveTcpConnection(conn, respond);
  });
  let udp: dgram.Socket | undefined;
  // With port 0 the UDP port is random and may be taken on TCP: retry a few times.
  for (let attempt = 0; ; attempt++) {
    try {
      udp = await bindUdp(host, port);
      await listenTcp(tcp, host, udp.address().port);
      break;
    } catch (err) {
      udp?.close();
      udp = undefined;
      const e = err as NodeJS.ErrnoException;
      if (port === 0 && e.code === "EADDRINUSE" && attempt < 5) continue;
      throw listenError(e, opts.listen, key);
    }
  }
  const sock = udp;
  sock.on("error", (err) => log(`dns udp: ${err.message}`));
  sock.on("message", (msg, rinfo) => {
    void respond(msg).then((r) => {
      if (r) sock.send(r, rinfo.port, rinfo.address, (err) => err && log(`dns send: ${err.message}`));
    });
  });
  tcp.on("error", (err) => log(`dns tcp: ${err.message}`));
  const address = { host, port: sock.address().port };
  log(`dns: serving .vm on ${host}:${address.port} (udp+tcp)${opts.upstream?.length ? `, forwarding to ${opts.upstream.join(", ")}` : ""}`);
  return {
    address,
    close: async () => {
      for (const c of conns) c.destroy();
      await Promise.all([
        new Promise<void>((r) => tcp.close(() => r())),
        new Promise<void>((r) => {
          try {
            sock.close(() => r());
          } catch {
            r();
          }
        }),
      ]);
    },
  };
}
