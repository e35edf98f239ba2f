import { afterEach, describe, expect, test } from "bun:test";
import net from "node:net";
import { dnsQuery, fakeUpstream, firstAnswer, rcodeOf, tcpAsk, tcpFrame, udpAsk } from "../testing/dns-client.ts";
import { RCODE } from "./dns.ts";
import { parseNetPolicy } from "../vm/net-policy.ts";
import type { DnsGuest, DnsGuests } from "./dns-policy.ts";
import { FORWARD_LIMITS } from "./dns-responder.ts";
import { type DnsServer, startDnsServer } from "./dns-server.ts";
import { TCP_LIMITS, type TcpLimits } from "./dns-tcp.ts";

// Guests are told apart by source address; loopback has a whole /8 to ask from.
const NONE = "127.0.0.2";
const NAT = "127.0.0.3";
const ALLOW = "127.0.0.4";
const STRANGER = "127.0.0.9";

const guestsByIp = new Map<string, DnsGuest>([
  [NONE, { id: "id-a", name: "a", policy: { mode: "none" }, groups: ["dev"] }],
  [NAT, { id: "id-b", name: "b", policy: { mode: "nat" }, groups: ["dev"] }],
  [ALLOW, { id: "id-c", name: "c", policy: parseNetPolicy("allow:svc.test,*.example.org"), groups: [] }],
]);
const records = new Map([...guestsByIp].map(([ip, g]) => [g.name, ip]));

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A guest-facing server with a counting fake upstream; `allowResolved` calls are recorded in `events`. */
async function setup(
  opts: {
    silentUpstream?: boolean;
    allow?: (id: string, addrs: string[], ttl: number) => Promise<void>;
    tcpLimits?: TcpLimits;
    upstreamTimeoutMs?: number;
  } = {},
) {
  const upstream = await fakeUpstream({ silent: opts.silentUpstream, address: "198.18.7.7", ttl: 5 });
  cleanups.push(upstream.close);
  const events: string[] = [];
  const guests: DnsGuests = {
    at: (ip) => guestsByIp.get(ip) ?? null,
    named: (name) => [...guestsByIp.values()].find((g) => g.name === name) ?? null,
    allowResolved: async (id, addrs, ttl) => {
      events.push(`allow ${id} ${addrs.join(",")} ${ttl}`);
      await (opts.allow ?? (async () => {}))(id, addrs, ttl);
      events.push("allowed");
    },
  };
  const server: DnsServer = await startDnsServer({
    listen: "127.0.0.1:0",
    records: () => records,
    upstream: [`127.0.0.1:${upstream.port}`],
    upstreamTimeoutMs: opts.upstreamTimeoutMs ?? 2000,
    guests,
    tcpLimits: opts.tcpLimits,
  });
  cleanups.push(() => server.close());
  const ask = (name: string, from: string, type: "A" | "TXT" = "A") => udpAsk(server.address.port, dnsQuery(name, type), { from });
  return { server, upstream, events, ask };
}

describe("guest DNS follows the asking VM's policy", () => {
  test("--net none: a non-.vm name is REFUSED (UDP and TCP) and the upstream sees zero queries", async () => {
    const { server, upstream, ask } = await setup();
    expect(rcodeOf(await ask("example.com", NONE))).toBe(RCODE.REFUSED);
    expect(rcodeOf(await ask("data.exfil.example.com", NONE, "TXT"))).toBe(RCODE.REFUSED);
    expect(rcodeOf(await tcpAsk(server.address.port, dnsQuery("example.com"), { from: NONE }))).toBe(RCODE.REFUSED);
    expect(upstream.seen).toEqual([]);
  });

  test(".vm answers follow groups: itself and group peers; others NXDOMAIN", async () => {
    const { ask } = await setup();
    expect(firstAnswer(await ask("a.vm", NONE))).toBe(NONE);
    expect(firstAnswer(await ask("b.vm", NONE))).toBe(NAT);
    expect(rcodeOf(await ask("c.vm", NONE))).toBe(RCODE.NXDOMAIN);
    expect(rcodeOf(await ask("a.vm", ALLOW))).toBe(RCODE.NXDOMAIN);
    expect(firstAnswer(await ask("c.vm", ALLOW))).toBe(ALLOW);
    expect(rcodeOf(await ask("nobody.vm", NAT))).toBe(RCODE.NXDOMAIN);
  });

  test("a source that is no VM's address is REFUSED, .vm names included", async () => {
    const { upstream, ask } = await setup();
    expect(rcodeOf(await ask("a.vm", STRANGER))).toBe(RCODE.REFUSED);
    expect(rcodeOf(await ask("example.com", STRANGER))).toBe(RCODE.REFUSED);
    expect(upstream.seen).toEqual([]);
  });

  test("--net nat: forwarded as before, nothing learned", async () => {
    const { upstream, events, ask } = await setup();
    expect(firstAnswer(await ask("example.com", NAT))).toBe("198.18.7.7");
    expect(upstream.seen).toEqual(["example.com"]);
    expect(events).toEqual([]);
  });

  test("--net allow: a listed name is allowed for the VM (TTL clamped) before the guest gets the answer; others REFUSED", async () => {
    const { upstream, events, ask } = await setup({ allow: () => Bun.sleep(150) });
    const r = await ask("svc.test", ALLOW);
    events.push("answer");
    expect(firstAnswer(r)).toBe("198.18.7.7");
    expect(events).toEqual(["allow id-c 198.18.7.7 30", "allowed", "answer"]);
    expect(firstAnswer(await ask("api.example.org", ALLOW))).toBe("198.18.7.7");
    expect(rcodeOf(await ask("other.test", ALLOW))).toBe(RCODE.REFUSED);
    expect(rcodeOf(await ask("example.org", ALLOW))).toBe(RCODE.REFUSED);
    expect(upstream.seen).toEqual(["svc.test", "api.example.org"]);
  });

  test("--net allow: when the firewall cannot take the addresses the guest gets SERVFAIL, not the answer", async () => {
    const { ask } = await setup({ allow: async () => Promise.reject(new Error("nft failed")) });
    const r = await ask("svc.test", ALLOW);
    expect(rcodeOf(r)).toBe(RCODE.SERVFAIL);
    expect(r?.answers ?? []).toEqual([]);
  });

  test("UDP: one source cannot queue more than its share of upstream requests", async () => {
    const { upstream, server } = await setup({ silentUpstream: true, upstreamTimeoutMs: 1500 });
    const replies = await Promise.all(
      Array.from({ length: 40 }, (_, i) => udpAsk(server.address.port, dnsQuery(`n${i}.example.com`, "A", i), { from: NAT, timeoutMs: 4000 })),
    );
    expect(upstream.seen.length).toBe(FORWARD_LIMITS.inFlightPerSource);
    expect(replies.every((r) => rcodeOf(r) === RCODE.SERVFAIL)).toBe(true);
  });
});

describe("DNS over TCP is bounded", () => {
  const small: TcpLimits = { ...TCP_LIMITS, maxConnectionsPerSource: 3, maxUnsentBytes: 2048, idleMs: 600 };

  /** Opens a connection and resolves once it is connected, or with null when the server closed it first. */
  function connect(port: number, from: string): Promise<net.Socket | null> {
    return new Promise((resolve) => {
      const c = net.connect({ port, host: "127.0.0.1", localAddress: from });
      c.on("error", () => resolve(null));
      c.on("close", () => resolve(null));
      c.on("connect", () => setTimeout(() => resolve(c.destroyed ? null : c), 100));
      cleanups.push(() => c.destroy());
    });
  }

  test("a client that pipelines without reading stops being read, then is closed when idle", async () => {
    const { server } = await setup({ tcpLimits: small });
    const c = (await connect(server.address.port, NONE))!;
    c.pause(); // never read a reply
    const chunk = Buffer.concat(Array.from({ length: 2000 }, (_, i) => tcpFrame(dnsQuery("a.vm", "A", i))));
    let closed = false;
    c.on("close", () => (closed = true));
    const deadline = Date.now() + 3000;
    while (!closed && Date.now() < deadline && c.bytesWritten < 64 * 1024 * 1024) {
      if (!c.write(chunk)) await Promise.race([new Promise((r) => c.once("drain", r)), Bun.sleep(200)]);
    }
    console.log(`pipelined without reading: the server let ${(c.bytesWritten / 1024 / 1024).toFixed(1)} MiB in before it stopped reading`);
    expect(c.bytesWritten).toBeLessThan(64 * 1024 * 1024);
    for (let i = 0; i < 50 && !closed; i++) await Bun.sleep(100);
    expect(closed).toBe(true);
  }, 20_000);

  test("a client that pipelines and reads gets every reply up to the per-connection budget, then a clean close", async () => {
    const { server } = await setup({ tcpLimits: small });
    const c = (await connect(server.address.port, NONE))!;
    let got = Buffer.alloc(0);
    let replies = 0;
    const closed = new Promise<void>((resolve) => c.on("close", () => resolve()));
    c.on("data", (d) => {
      got = Buffer.concat([got, d]);
      while (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
        got = got.subarray(2 + got.readUInt16BE(0));
        replies++;
      }
    });
    c.write(Buffer.concat(Array.from({ length: small.maxMessages + 500 }, (_, i) => tcpFrame(dnsQuery("b.vm", "A", i)))));
    await Promise.race([closed, Bun.sleep(10_000)]);
    expect(replies).toBe(small.maxMessages);
    expect(c.closed || c.destroyed).toBe(true);
  }, 20_000);

  test("connections past the per-source cap are closed at once; other sources still get in", async () => {
    const { server } = await setup({ tcpLimits: small });
    const mine = await Promise.all([1, 2, 3, 4].map(() => connect(server.address.port, NAT)));
    expect(mine.filter((c) => c !== null).length).toBe(3);
    expect(firstAnswer(await tcpAsk(server.address.port, dnsQuery("a.vm"), { from: NONE }))).toBe(NONE);
  });
});
