import * as dnsPacket from "dns-packet";
import type { Answer, Packet, Question } from "dns-packet";

/** The zone banger is authoritative for: `<vm-name>.vm`. */
export const VM_ZONE = "vm";

/** DNS response codes banger sends (RFC 1035 §4.1.1). */
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

const QR = 1 << 15;
const AA = dnsPacket.AUTHORITATIVE_ANSWER;
const RD = dnsPacket.RECURSION_DESIRED;
const RA = dnsPacket.RECURSION_AVAILABLE;

/** Options for `answer`. */
export interface AnswerOptions {
  /** TTL of answers; short because records follow the VM lifecycle (default 5 s). */
  ttl?: number;
  /** Set when this server forwards other zones, so replies advertise recursion. */
  recursion?: boolean;
}

/** Lower-cases a query name and drops trailing dots: `Web.VM.` → `web.vm`. */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.+$/, "");
}

/** True when a name lies in the `.vm` zone (the apex included). */
export function inVmZone(name: string): boolean {
  const n = normalizeName(name);
  return n === VM_ZONE || n.endsWith(`.${VM_ZONE}`);
}

/** The record-map key for a query name: `Web.vm.` → `web`; null outside `.vm` or for the apex. */
export function recordKey(name: string): string | null {
  const n = normalizeName(name);
  if (!n.endsWith(`.${VM_ZONE}`)) return null;
  const label = n.slice(0, -VM_ZONE.length - 1);
  return label === "" ? null : label;
}

/** True when this query should go to an upstream resolver (a standard query outside `.vm`). */
export function needsForward(query: Packet): boolean {
  const qs = query.questions ?? [];
  return opcodeOf(query) === 0 && qs.length === 1 && !inVmZone(qs[0]!.name);
}

function opcodeOf(p: Packet): number {
  return ((p.flags ?? 0) >> 11) & 0xf;
}

function soa(ttl: number): Answer {
  return {
    name: VM_ZONE,
    type: "SOA",
    class: "IN",
    ttl,
    data: {
      mname: `ns.${VM_ZONE}`,
      rname: `hostmaster.${VM_ZONE}`,
      serial: 1,
      refresh: 3600,
      retry: 600,
      expire: 86400,
      minimum: ttl,
    },
  };
}

function reply(query: Packet, rcode: number, extra: Partial<Packet> & { aa?: boolean; ra?: boolean } = {}): Packet {
  const flags = (opcodeOf(query) << 11) | ((query.flags ?? 0) & RD) | (extra.aa ? AA : 0) | (extra.ra ? RA : 0) | rcode;
  return {
    type: "response",
    id: query.id ?? 0,
    flags,
    questions: query.questions ?? [],
    answers: extra.answers ?? [],
    authorities: extra.authorities ?? [],
    additionals: [],
  };
}

/** Looks a VM up by key, tolerating maps keyed with the zone suffix, a trailing dot or mixed case. */
function lookup(records: ReadonlyMap<string, string>, key: string): string | undefined {
  const direct = records.get(key);
  if (direct !== undefined) return direct;
  for (const [name, ip] of records) {
    const n = normalizeName(name);
    if (n === key || n === `${key}.${VM_ZONE}`) return ip;
  }
  return undefined;
}

/**
 * The DNS logic, pure: answers one query from a map of VM name (lower-case, no zone) →
 * IPv4. A for known `.vm` names, NODATA for other types, NXDOMAIN for unknown names,
 * REFUSED outside `.vm` (the server forwards those itself when it has upstreams).
 */
export function answer(query: Packet, records: ReadonlyMap<string, string>, opts: AnswerOptions = {}): Packet {
  const ttl = opts.ttl ?? 5;
  const ra = opts.recursion ?? false;
  if (query.type === "response") return reply(query, RCODE.FORMERR, { ra });
  if (opcodeOf(query) !== 0) return reply(query, RCODE.NOTIMP, { ra });
  const qs = query.questions ?? [];
  if (qs.length !== 1) return reply(query, RCODE.FORMERR, { ra });
  const q = qs[0] as Question;
  if (typeof q.name !== "string" || !inVmZone(q.name)) return reply(query, RCODE.REFUSED, { ra });
  if (q.class !== undefined && q.class !== "IN" && q.class !== "ANY") return reply(query, RCODE.REFUSED, { ra });
  const key = recordKey(q.name);
  if (key === null) {
    // The zone apex exists: answer its SOA, NODATA for anything else.
    const answers = q.type === "SOA" ? [soa(ttl)] : [];
    return reply(query, RCODE.NOERROR, { aa: true, ra, answers, authorities: answers.length ? [] : [soa(ttl)] });
  }
  const ip = lookup(records, key);
  if (ip === undefined) return reply(query, RCODE.NXDOMAIN, { aa: true, ra, authorities: [soa(ttl)] });
  if (q.type === "A" || (q.type as string) === "ANY") {
    const answers: Answer[] = [{ name: q.name, type: "A", class: "IN", ttl, data: ip }];
    return reply(query, RCODE.NOERROR, { aa: true, ra, answers });
  }
  return reply(query, RCODE.NOERROR, { aa: true, ra, authorities: [soa(ttl)] });
}

/** A REFUSED reply to any query, `.vm` names included (the asker may not use this server). */
export function refused(query: Packet, recursion = false): Packet {
  return reply(query, RCODE.REFUSED, { ra: recursion });
}

/** A SERVFAIL reply to a query (used when every upstream timed out). */
export function servFail(query: Packet): Packet {
  return reply(query, RCODE.SERVFAIL, { ra: true });
}

/**
 * A FORMERR reply built from just the 12-byte header of a packet that did not decode;
 * null when even the header is missing or the packet is itself a response (never
 * answer responses: two servers could bounce errors at each other forever).
 */
export function formErrFromHeader(raw: Uint8Array): Buffer | null {
  if (raw.length < 12) return null;
  const buf = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  const flags = buf.readUInt16BE(2);
  if (flags & QR) return null;
  const out = Buffer.alloc(12);
  out.writeUInt16BE(buf.readUInt16BE(0), 0);
  out.writeUInt16BE(QR | (flags & 0x7800) | (flags & RD) | RCODE.FORMERR, 2);
  return out;
}

/** The outcome of reading one raw datagram or TCP frame. */
export type Incoming = { kind: "query"; packet: Packet } | { kind: "reply"; bytes: Buffer } | { kind: "drop" };

/** Decodes a raw message: a query to handle, a ready FORMERR reply, or something to drop. */
export function decodeIncoming(raw: Uint8Array): Incoming {
  let packet: Packet;
  try {
    packet = dnsPacket.decode(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength));
  } catch {
    const bytes = formErrFromHeader(raw);
    return bytes ? { kind: "reply", bytes } : { kind: "drop" };
  }
  if (packet.type === "response") return { kind: "drop" };
  return { kind: "query", packet };
}

/** Encodes a reply, falling back to a header-only FORMERR when the packet cannot be encoded. */
export function encodeReply(packet: Packet, raw: Uint8Array): Buffer | null {
  try {
    return dnsPacket.encode(packet);
  } catch {
    return formErrFromHeader(raw);
  }
}
