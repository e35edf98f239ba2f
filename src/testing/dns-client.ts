import dgram from "node:dgram";
import net from "node:net";
import * as dnsPacket from "dns-packet";
import type { Packet, RecordType } from "dns-packet";

/** A standard recursive query for one name. */
export function dnsQuery(name: string, type: RecordType = "A", id = 7): Buffer {
  return dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type, class: "IN" }] });
}

/** A message with the 2-byte length prefix of DNS over TCP. */
export function tcpFrame(msg: Buffer): Buffer {
  return Buffer.concat([Buffer.from([msg.length >> 8, msg.length & 0xff]), msg]);
}

/** One UDP exchange from a fresh socket (bound to `from` when given, e.g. 127.0.0.2); null on timeout. */
export function udpAsk(port: number, msg: Buffer, opts: { host?: string; from?: string; timeoutMs?: number } = {}): Promise<Packet | null> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket("udp4");
    const timer = setTimeout(() => (sock.close(), resolve(null)), opts.timeoutMs ?? 2000);
    sock.on("message", (m) => {
      clearTimeout(timer);
      sock.close();
      resolve(dnsPacket.decode(m));
    });
    sock.bind(0, opts.from ?? "127.0.0.1", () => sock.send(msg, port, opts.host ?? "127.0.0.1"));
  });
}

/** One TCP exchange with length framing (from `from` when given). */
export function tcpAsk(port: number, msg: Buffer, opts: { host?: string; from?: string } = {}): Promise<Packet> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ port, host: opts.host ?? "127.0.0.1", localAddress: opts.from }, () => c.write(tcpFrame(msg)));
    let buf = Buffer.alloc(0);
    c.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        c.destroy();
        resolve(dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))));
      }
    });
    c.on("error", reject);
    c.on("close", () => reject(new Error("connection closed before a reply")));
  });
}

/** The response code of a reply (-1 for none). */
export const rcodeOf = (p: Packet | null) => (p ? (p.flags ?? 0) & 0xf : -1);
/** The data of the first answer (an A record's address). */
export const firstAnswer = (p: Packet | null) => (p?.answers?.[0] as { data?: unknown } | undefined)?.data;

/** A fake upstream resolver on loopback: answers every query with `address` (or stays silent), counting them. */
export async function fakeUpstream(opts: { silent?: boolean; address?: string; ttl?: number } = {}) {
  const u = dgram.createSocket("udp4");
  const seen: string[] = [];
  u.on("message", (m, rinfo) => {
    const q = dnsPacket.decode(m);
    seen.push(q.questions?.[0]?.name ?? "");
    if (opts.silent) return;
    const name = q.questions![0]!.name;
    const r = dnsPacket.encode({
      type: "response",
      id: q.id,
      flags: dnsPacket.RECURSION_AVAILABLE,
      questions: q.questions,
      answers: [{ name, type: "A", ttl: opts.ttl ?? 60, data: opts.address ?? "192.0.2.1" }],
    });
    u.send(r, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => u.bind(0, "127.0.0.1", () => r()));
  return { port: u.address().port, seen, close: () => void u.close() };
}
