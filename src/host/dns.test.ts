import { describe, expect, test } from "bun:test";
import * as dnsPacket from "dns-packet";
import type { Packet, RecordType } from "dns-packet";
import { RCODE, answer, decodeIncoming, formErrFromHeader, inVmZone, needsForward, recordKey, servFail } from "./dns.ts";

const records = new Map([
  ["web", "172.30.0.2"],
  ["db", "172.30.0.3"],
]);

function q(name: string, type: RecordType = "A", extra: Partial<Packet> = {}): Packet {
  return { type: "query", id: 4242, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type, class: "IN" }], ...extra };
}

const rcodeOf = (p: Packet) => (p.flags ?? 0) & 0xf;
const isAA = (p: Packet) => ((p.flags ?? 0) & dnsPacket.AUTHORITATIVE_ANSWER) !== 0;

describe("answer()", () => {
  const cases: Array<{ name: string; query: Packet; rcode: number; ips?: string[]; aa?: boolean; soa?: boolean }> = [
    { name: "A for a known VM", query: q("web.vm"), rcode: RCODE.NOERROR, ips: ["172.30.0.2"], aa: true },
    { name: "case-insensitive", query: q("WeB.Vm"), rcode: RCODE.NOERROR, ips: ["172.30.0.2"], aa: true },
    { name: "trailing dot tolerated", query: q("db.vm."), rcode: RCODE.NOERROR, ips: ["172.30.0.3"], aa: true },
    { name: "AAAA for a known VM is NODATA", query: q("web.vm", "AAAA"), rcode: RCODE.NOERROR, ips: [], aa: true, soa: true },
    { name: "MX for a known VM is NODATA", query: q("web.vm", "MX"), rcode: RCODE.NOERROR, ips: [], aa: true, soa: true },
    { name: "unknown .vm is NXDOMAIN with SOA", query: q("nope.vm"), rcode: RCODE.NXDOMAIN, ips: [], aa: true, soa: true },
    { name: "sub-name of a VM is NXDOMAIN", query: q("a.web.vm"), rcode: RCODE.NXDOMAIN, ips: [], aa: true, soa: true },
    { name: "zone apex A is NODATA", query: q("vm"), rcode: RCODE.NOERROR, ips: [], aa: true, soa: true },
    { name: "other zones are REFUSED", query: q("example.com"), rcode: RCODE.REFUSED, ips: [], aa: false },
    { name: "a name merely ending in vm is not in the zone", query: q("webvm"), rcode: RCODE.REFUSED, ips: [], aa: false },
    { name: "no question is FORMERR", query: { type: "query", id: 1, questions: [] }, rcode: RCODE.FORMERR },
    {
      name: "two questions are FORMERR",
      query: {
        type: "query",
        id: 1,
        questions: [
          { name: "web.vm", type: "A" },
          { name: "db.vm", type: "A" },
        ],
      },
      rcode: RCODE.FORMERR,
    },
    { name: "non-QUERY opcode is NOTIMP", query: q("web.vm", "A", { flags: 2 << 11 }), rcode: RCODE.NOTIMP },
    { name: "CHAOS class is REFUSED", query: { type: "query", id: 1, questions: [{ name: "web.vm", type: "TXT", class: "CH" }] }, rcode: RCODE.REFUSED },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const r = answer(c.query, records);
      expect(r.type).toBe("response");
      expect(r.id).toBe(c.query.id ?? 0);
      expect(rcodeOf(r)).toBe(c.rcode);
      if (c.ips) expect((r.answers ?? []).map((a) => (a as { data?: unknown }).data)).toEqual(c.ips);
      if (c.aa !== undefined) expect(isAA(r)).toBe(c.aa);
      if (c.soa) expect((r.authorities ?? []).map((a) => a.type)).toEqual(["SOA"]);
      // Every reply must survive a round trip through the wire format.
      const wire = dnsPacket.decode(dnsPacket.encode(r));
      expect(wire.id).toBe(r.id);
    });
  }

  test("answer name echoes the question as asked, with TTL and RD copied", () => {
    const r = answer(q("WEB.vm."), records, { ttl: 30 });
    expect(r.answers?.[0]).toMatchObject({ name: "WEB.vm.", type: "A", ttl: 30 });
    expect((r.flags ?? 0) & dnsPacket.RECURSION_DESIRED).toBeTruthy();
    expect((r.flags ?? 0) & dnsPacket.RECURSION_AVAILABLE).toBe(0);
  });

  test("recursion option advertises RA", () => {
    const r = answer(q("web.vm"), records, { recursion: true });
    expect((r.flags ?? 0) & dnsPacket.RECURSION_AVAILABLE).toBeTruthy();
  });

  test("SOA at the apex is answered", () => {
    const r = answer(q("vm.", "SOA"), records);
    expect(r.answers?.map((a) => a.type)).toEqual(["SOA"]);
  });

  test("maps keyed with the zone suffix or capitals still match", () => {
    const odd = new Map([["Api.vm.", "172.30.0.9"]]);
    expect((answer(q("api.vm"), odd).answers?.[0] as { data?: unknown }).data).toBe("172.30.0.9");
  });

  test("a record removed from the map becomes NXDOMAIN", () => {
    const m = new Map(records);
    m.delete("web");
    expect(rcodeOf(answer(q("web.vm"), m))).toBe(RCODE.NXDOMAIN);
  });
});

describe("helpers", () => {
  test("zone membership and record keys", () => {
    expect(inVmZone("a.vm")).toBe(true);
    expect(inVmZone("A.VM.")).toBe(true);
    expect(inVmZone("vm")).toBe(true);
    expect(inVmZone("example.com")).toBe(false);
    expect(recordKey("Web.VM.")).toBe("web");
    expect(recordKey("vm.")).toBeNull();
    expect(recordKey("example.com")).toBeNull();
  });

  test("needsForward only for standard queries outside .vm", () => {
    expect(needsForward(q("example.com"))).toBe(true);
    expect(needsForward(q("web.vm"))).toBe(false);
    expect(needsForward(q("example.com", "A", { flags: 2 << 11 }))).toBe(false);
  });

  test("servFail keeps id and question", () => {
    const r = servFail(q("example.com"));
    expect(rcodeOf(r)).toBe(RCODE.SERVFAIL);
    expect(r.id).toBe(4242);
    expect(r.questions?.[0]?.name).toBe("example.com");
  });

  test("FORMERR from a header alone; nothing for short packets or responses", () => {
    const hdr = Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff]);
    const fe = formErrFromHeader(hdr)!;
    expect(fe.readUInt16BE(0)).toBe(0x1234);
    expect(fe.readUInt16BE(2) & 0x8000).toBeTruthy();
    expect(fe.readUInt16BE(2) & 0xf).toBe(RCODE.FORMERR);
    expect(fe.readUInt16BE(2) & 0x0100).toBeTruthy();
    expect(formErrFromHeader(hdr.subarray(0, 11))).toBeNull();
    const resp = Buffer.from(hdr);
    resp[2] = 0x81;
    expect(formErrFromHeader(resp)).toBeNull();
  });

  test("decodeIncoming: query, truncated → FORMERR, response → drop, runt → drop", () => {
    const wire = dnsPacket.encode(q("web.vm"));
    expect(decodeIncoming(wire).kind).toBe("query");
    expect(decodeIncoming(wire.subarray(0, wire.length - 3)).kind).toBe("reply");
    expect(decodeIncoming(dnsPacket.encode(answer(q("web.vm"), records))).kind).toBe("drop");
    expect(decodeIncoming(Buffer.from([1, 2, 3])).kind).toBe("drop");
  });
});
