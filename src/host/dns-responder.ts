import dgram from "node:dgram";
import net from "node:net";
import type { Packet } from "dns-packet";
import { answer, decodeIncoming, encodeReply, needsForward, refused, servFail } from "./dns.ts";
import { askedKey, decide, type DnsGuests, learnedAddresses, type Verdict } from "./dns-policy.ts";
import { parseHostPort } from "./dns-address.ts";

/** Turns one raw query from a source address into the raw reply; null means send nothing. Never throws. */
export type Responder = (raw: Buffer, source: string) => Promise<Buffer | null>;

/** What a responder is built from (the parts of the server options it uses). */
export interface ResponderOptions {
  records: () => ReadonlyMap<string, string>;
  upstream?: string[];
  upstreamTimeoutMs?: number;
  /** Per-guest policy; without it every source gets every `.vm` name and forwarding (the host's own listener). */
  guests?: DnsGuests;
}

/** Caps on forwarded queries waiting for an upstream: overall and per source address. */
export const FORWARD_LIMITS = { inFlight: 256, inFlightPerSource: 16, learnTimeoutMs: 5000 } as const;

const EMPTY: ReadonlyMap<string, string> = new Map();

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

/** Counts forwarded queries in flight, overall and per source, refusing a slot past the caps. */
class ForwardSlots {
  private total = 0;
  private readonly bySource = new Map<string, number>();

  take(source: string): boolean {
    const mine = this.bySource.get(source) ?? 0;
    if (this.total >= FORWARD_LIMITS.inFlight || mine >= FORWARD_LIMITS.inFlightPerSource) return false;
    this.total++;
    this.bySource.set(source, mine + 1);
    return true;
  }

  release(source: string) {
    this.total--;
    const mine = (this.bySource.get(source) ?? 1) - 1;
    if (mine > 0) this.bySource.set(source, mine);
    else this.bySource.delete(source);
  }
}

/** Resolves to false when `p` has not settled within `ms` or rejected. */
function settlesWithin(p: Promise<void>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  return Promise.race([
    p.then(
      () => true,
      () => false,
    ),
    late,
  ]).finally(() => clearTimeout(timer));
}

/** An IPv4 source as a plain dotted quad (`::ffff:172.30.0.2` → `172.30.0.2`). */
export function plainSource(address: string): string {
  return address.startsWith("::ffff:") && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
}

/** The per-message pipeline shared by UDP and TCP. */
export function makeResponder(opts: ResponderOptions, log: (m: string) => void): Responder {
  const forward = opts.upstream?.length ? makeForwarder(opts.upstream, opts.upstreamTimeoutMs ?? 2000) : null;
  const slots = new ForwardSlots();
  const guests = opts.guests;

  const relay = async (q: Packet, raw: Buffer, source: string, learnFor: string | null): Promise<Buffer | null> => {
    if (!forward || !slots.take(source)) return encodeReply(servFail(q), raw);
    try {
      const reply = await forward(raw);
      if (!reply) return encodeReply(servFail(q), raw);
      const learned = learnFor ? learnedAddresses(reply) : null;
      if (learned && guests && !(await settlesWithin(guests.allowResolved(learnFor!, learned.addrs, learned.ttl), FORWARD_LIMITS.learnTimeoutMs))) {
        log(`dns: could not allow ${learned.addrs.join(", ")} for VM ${learnFor}; answered SERVFAIL`);
        return encodeReply(servFail(q), raw);
      }
      return reply;
    } finally {
      slots.release(source);
    }
  };

  const verdictFor = (q: Packet, source: string): Verdict => {
    if (!guests) return forward && needsForward(q) ? { kind: "forward", learnFor: null } : { kind: "local", visible: () => true };
    return decide(guests.at(source), q, guests, forward !== null);
  };

  return async (raw, rawSource) => {
    try {
      const inc = decodeIncoming(raw);
      if (inc.kind === "drop") return null;
      if (inc.kind === "reply") return inc.bytes;
      const q = inc.packet;
      const source = plainSource(rawSource);
      const verdict = verdictFor(q, source);
      if (verdict.kind === "refuse") return encodeReply(refused(q, forward !== null), raw);
      if (verdict.kind === "forward") return await relay(q, raw, source, verdict.learnFor);
      const key = askedKey(q);
      const records = key !== null && !verdict.visible(key) ? EMPTY : opts.records();
      return encodeReply(answer(q, records, { recursion: forward !== null }), raw);
    } catch (err) {
      log(`dns: dropped a query: ${(err as Error)?.message ?? err}`);
      return null;
    }
  };
}
