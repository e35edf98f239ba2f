import * as dnsPacket from "dns-packet";
import type { Packet } from "dns-packet";
import { type NetPolicy, policyAllowsName } from "../vm/net-policy.ts";
import { needsForward, recordKey } from "./dns.ts";

/** The VM that sent a query, as the guest resolver sees it. */
export interface DnsGuest {
  id: string;
  name: string;
  policy: NetPolicy;
  groups: readonly string[];
}

/** Where the guest resolver learns who asks, and tells the firewall what it answered. */
export interface DnsGuests {
  /** The running VM whose address is `ip`; null for any other source. */
  at(ip: string): DnsGuest | null;
  /** The running VM called `name` (a `.vm` record key); null when none. */
  named(name: string): DnsGuest | null;
  /** Lets VM `vmId` connect to `addrs` for `ttlSeconds`; awaited before the answer reaches the guest. */
  allowResolved(vmId: string, addrs: string[], ttlSeconds: number): Promise<void>;
}

/** What to do with one query from a guest. */
export type Verdict =
  /** Answer from the `.vm` records; `visible` says which record keys this guest may see. */
  | { kind: "local"; visible: (key: string) => boolean }
  | { kind: "refuse" }
  /** Relay upstream; with `learnFor` (a VM id) the answer's addresses are allowed for that VM first. */
  | { kind: "forward"; learnFor: string | null };

/** Bounds on how long an address learned from an answer stays allowed. */
export const LEARNED_TTL = { minSeconds: 30, maxSeconds: 3600 } as const;

/** True when `asker` may see `target` in `.vm`: itself, or a VM sharing one of its groups. */
export function mayResolve(asker: DnsGuest, target: DnsGuest | null): boolean {
  if (!target) return false;
  return target.id === asker.id || asker.groups.some((g) => target.groups.includes(g));
}

/**
 * The policy decision for one query: unknown sources are refused; `.vm` names are answered
 * for the guest itself and its group peers; other names follow the guest's policy (`none`
 * refuses, `nat` forwards, `allow:` forwards only listed names and learns the answer).
 */
export function decide(asker: DnsGuest | null, query: Packet, guests: Pick<DnsGuests, "named">, hasUpstream: boolean): Verdict {
  if (!asker) return { kind: "refuse" };
  const local: Verdict = { kind: "local", visible: (key) => mayResolve(asker, guests.named(key)) };
  if (!needsForward(query)) return local;
  if (!hasUpstream) return local; // answer() refuses names outside .vm
  const policy = asker.policy;
  if (policy.mode === "nat") return { kind: "forward", learnFor: null };
  if (policy.mode === "allow" && policyAllowsName(policy, query.questions![0]!.name)) return { kind: "forward", learnFor: asker.id };
  return { kind: "refuse" };
}

/** The record key a `.vm` query asks for (null for the apex or names outside `.vm`). */
export function askedKey(query: Packet): string | null {
  const q = query.questions?.[0];
  return q && typeof q.name === "string" ? recordKey(q.name) : null;
}

/** The IPv4 addresses of an upstream answer and how long to allow them (clamped); null when it has none. */
export function learnedAddresses(reply: Buffer): { addrs: string[]; ttl: number } | null {
  let packet: Packet;
  try {
    packet = dnsPacket.decode(reply);
  } catch {
    return null;
  }
  const records = (packet.answers ?? []).flatMap((a) => (a.type === "A" && typeof a.data === "string" ? [{ addr: a.data, ttl: a.ttl ?? 0 }] : []));
  if (!records.length) return null;
  const addrs = [...new Set(records.map((r) => r.addr))];
  const ttl = Math.min(...records.map((r) => r.ttl));
  return { addrs, ttl: clampTtl(ttl) };
}

/** Keeps a learned address at least long enough to connect, at most an hour. */
export function clampTtl(ttl: number): number {
  if (!Number.isFinite(ttl)) return LEARNED_TTL.minSeconds;
  return Math.min(LEARNED_TTL.maxSeconds, Math.max(LEARNED_TTL.minSeconds, Math.floor(ttl)));
}
