import dgram from "node:dgram";
import net from "node:net";
import { BangerError } from "../errors.ts";
import { parseHostPort } from "./dns-address.ts";
import type { DnsGuests } from "./dns-policy.ts";
import { makeResponder } from "./dns-responder.ts";
import { connectionGate, serveTcpConnection, TCP_LIMITS, type TcpLimits } from "./dns-tcp.ts";

export { parseHostPort } from "./dns-address.ts";
export { exchangeUdp } from "./dns-responder.ts";

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
  /**
   * Who may ask what (the instance that serves guests): queries are matched to a VM by
   * source address and follow its policy and groups; any other source is REFUSED.
   * Without it every client gets every `.vm` name (the host's own listener).
   */
  guests?: DnsGuests;
  /** Bounds on DNS-over-TCP clients (default TCP_LIMITS). */
  tcpLimits?: TcpLimits;
  /** The config key that sets `listen`, named in errors (default `dns_listen`). */
  configKey?: string;
  log?: (msg: string) => void;
}

/** A running DNS server on UDP and TCP. */
export interface DnsServer {
  address: { host: string; port: number };
  close(): Promise<void>;
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

/** Starts the DNS server on UDP and TCP at `listen`; throws a BangerError naming the address when it cannot bind. */
export async function startDnsServer(opts: DnsServerOptions): Promise<DnsServer> {
  const key = opts.configKey ?? "dns_listen";
  const log = opts.log ?? (() => {});
  const { host, port } = parseHostPort(opts.listen, null, key);
  const respond = makeResponder(opts, log);
  const limits = opts.tcpLimits ?? TCP_LIMITS;
  const gate = connectionGate(limits);
  const tcp = net.createServer((conn) => {
    if (gate.admit(conn)) serveTcpConnection(conn, respond, limits);
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
      gate.close();
      throw listenError(e, opts.listen, key);
    }
  }
  const sock = udp;
  sock.on("error", (err) => log(`dns udp: ${err.message}`));
  sock.on("message", (msg, rinfo) => {
    void respond(msg, rinfo.address).then((r) => {
      if (r) sock.send(r, rinfo.port, rinfo.address, (err) => err && log(`dns send: ${err.message}`));
    });
  });
  tcp.on("error", (err) => log(`dns tcp: ${err.message}`));
  const address = { host, port: sock.address().port };
  log(`dns: serving .vm on ${host}:${address.port} (udp+tcp)${opts.upstream?.length ? `, forwarding to ${opts.upstream.join(", ")}` : ""}`);
  return {
    address,
    close: async () => {
      gate.close();
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
