import { describe, expect, test } from "bun:test";
import * as dnsPacket from "dns-packet";
import type { Packet, RecordType } from "dns-packet";
import { type NetPolicy, parseNetPolicy } from "../vm/net-policy.ts";
import { clampTtl, decide, type DnsGuest, learnedAddresses, mayResolve } from "./dns-policy.ts";

function q(name: string, type: RecordType = "A"): Packet {
  return { type: "query", id: 1, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type, class: "IN" }] };
}

const guest = (id: string, policy: NetPolicy, groups: string[] = []): DnsGuest => ({ id, name: id, policy, groups });
const a = guest("a", { mode: "none" }, ["dev"]);
const b = guest("b", { mode: "nat" }, ["dev", "ops"]);
const c = guest("c", parseNetPolicy("allow:svc.test,*.example.org,203.0.113.0/24"));
const all = new Map([a, b, c].map((g) => [g.name, g]));
const named = { named: (n: string) => all.get(n) ?? null };

describe("mayResolve (.vm follows groups)", () => {
  test("itself always, a group peer, nobody else", () => {
    expect(mayResolve(a, a)).toBe(true);
    expect(mayResolve(a, b)).toBe(true);
    expect(mayResolve(b, a)).toBe(true);
    expect(mayResolve(a, c)).toBe(false);
    expect(mayResolve(c, a)).toBe(false);
    expect(mayResolve(c, c)).toBe(true);
    expect(mayResolve(a, null)).toBe(false);
  });
});

describe("decide", () => {
  test("an unknown source is refused, .vm names too", () => {
    expect(decide(null, q("a.vm"), named, true).kind).toBe("refuse");
    expect(decide(null, q("example.com"), named, true).kind).toBe("refuse");
  });
  test("none: .vm answered locally, everything else refused", () => {
    expect(decide(a, q("example.com"), named, true).kind).toBe("refuse");
    expect(decide(a, q("svc.test", "TXT"), named, true).kind).toBe("refuse");
    const v = decide(a, q("b.vm"), named, true);
    expect(v.kind).toBe("local");
    if (v.kind === "local") expect([v.visible("a"), v.visible("b"), v.visible("c"), v.visible("zzz")]).toEqual([true, true, false, false]);
  });
  test("nat: forwarded, nothing learned", () => {
    expect(decide(b, q("example.com", "TXT"), named, true)).toEqual({ kind: "forward", learnFor: null });
  });
  test("allow: listed names forwarded and learned for this VM, others refused", () => {
    expect(decide(c, q("svc.test"), named, true)).toEqual({ kind: "forward", learnFor: "c" });
    expect(decide(c, q("api.example.org", "AAAA"), named, true)).toEqual({ kind: "forward", learnFor: "c" });
    expect(decide(c, q("other.test"), named, true).kind).toBe("refuse");
    expect(decide(c, q("example.org"), named, true).kind).toBe("refuse");
    expect(decide(c, q("x.svc.test"), named, true).kind).toBe("refuse");
    const v = decide(c, q("a.vm"), named, true);
    expect(v.kind === "local" && v.visible("a")).toBe(false);
  });
  test("without upstreams nothing is forwarded (answer() refuses outside .vm)", () => {
    expect(decide(b, q("example.com"), named, false).kind).toBe("local");
  });
});

describe("learnedAddresses", () => {
  const reply = (answers: dnsPacket.Answer[]) => dnsPacket.encode({ type: "response", id: 1, questions: [{ name: "svc.test", type: "A" }], answers });
  test("A records (through a CNAME), deduplicated, shortest TTL clamped", () => {
    const r = learnedAddresses(
      reply([
        { name: "svc.test", type: "CNAME", ttl: 5, data: "edge.test" },
        { name: "edge.test", type: "A", ttl: 120, data: "198.18.0.2" },
        { name: "edge.test", type: "A", ttl: 90, data: "198.18.0.3" },
        { name: "edge.test", type: "A", ttl: 300, data: "198.18.0.2" },
      ]),
    );
    expect(r).toEqual({ addrs: ["198.18.0.2", "198.18.0.3"], ttl: 90 });
  });
  test("no A record, or garbage, learns nothing", () => {
    expect(learnedAddresses(reply([{ name: "svc.test", type: "AAAA", ttl: 60, data: "2001:db8::1" }]))).toBeNull();
    expect(learnedAddresses(Buffer.from([1, 2, 3]))).toBeNull();
  });
  test("TTL clamped to 30 s .. 1 h", () => {
    expect([clampTtl(0), clampTtl(29.9), clampTtl(600), clampTtl(86_400), clampTtl(Number.NaN)]).toEqual([30, 30, 600, 3600, 30]);
  });
});
