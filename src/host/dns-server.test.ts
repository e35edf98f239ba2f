import { afterEach, describe, expect, test } from "bun:test";
import dgram from "node:dgram";
import net from "node:net";
import * as dnsPacket from "dns-packet";
import { BangerError } from "../errors.ts";
import { dnsQuery, fakeUpstream as startUpstream, firstAnswer, rcodeOf, tcpAsk, udpAsk } from "../testing/dns-client.ts";
import { hasBin, testNeeds } from "../testing/skip.ts";
import { type DnsServer, parseHostPort, startDnsServer } from "./dns-server.ts";

const started: Array<{ close(): Promise<void> | void }> = [];
afterEach(async () => {
  for (const s of started.splice(0)) await s.close();
});

async function start(records: Map<string, string>, extra: { upstream?: string[]; upstreamTimeoutMs?: number } = {}): Promise<DnsServer> {
  const s = await startDnsServer({ listen: "127.0.0.1:0", records: () => records, ...extra });
  started.push(s);
  return s;
}

const query = dnsQuery;
const rcode = rcodeOf;
const first = firstAnswer;

describe("dns server over real sockets", () => {
  test("A for a record over UDP, NXDOMAIN after removal, REFUSED elsewhere", async () => {
    const records = new Map([["web", "172.30.0.2"]]);
    const s = await start(records);
    const r = await udpAsk(s.address.port, query("web.vm"));
    expect(first(r)).toBe("172.30.0.2");
    expect(r?.id).toBe(7);
    records.delete("web");
    expect(rcode(await udpAsk(s.address.port, query("web.vm")))).toBe(3);
    expect(rcode(await udpAsk(s.address.port, query("example.com")))).toBe(5);
  });

  test("A over TCP with length framing", async () => {
    const s = await start(new Map([["db", "172.30.0.3"]]));
    const r = await tcpAsk(s.address.port, query("DB.vm.", "A", 99));
    expect(r.id).toBe(99);
    expect(first(r)).toBe("172.30.0.3");
  });

  testNeeds("dig answers A for a .vm name", [[hasBin("dig"), "needs dig (dnsutils)"]], async () => {
    const s = await start(new Map([["web", "172.30.0.2"]]));
    const run = async (...args: string[]) => {
      const p = Bun.spawn(["dig", "@127.0.0.1", "-p", String(s.address.port), "+time=2", "+tries=1", ...args], { stdout: "pipe" });
      return (await new Response(p.stdout).text()).trim();
    };
    expect(await run("+short", "web.vm")).toBe("172.30.0.2");
    expect(await run("+tcp", "+short", "web.vm")).toBe("172.30.0.2");
    expect(await run("nope.vm")).toContain("status: NXDOMAIN");
  });

  test("FUZZ: 10,000 random or mangled packets over UDP and 300 over TCP do not break the server", async () => {
    const s = await start(new Map([["web", "172.30.0.2"]]));
    let seed = 12345;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    const valid = query("web.vm", "A", 1);
    const mangle = (): Buffer => {
      switch (rand(5)) {
        case 0:
          return Buffer.from(Array.from({ length: rand(600) }, () => rand(256)));
        case 1:
          return valid.subarray(0, rand(valid.length));
        case 2: {
          const b = Buffer.from(valid);
          for (let i = 0; i < 1 + rand(4); i++) b[rand(b.length)] = rand(256);
          return b;
        }
        case 3: {
          const b = Buffer.from(valid);
          b.writeUInt16BE(rand(0x10000), 4 + 2 * rand(4)); // absurd section counts
          return b;
        }
        default: {
          const b = Buffer.from(valid);
          b[2] = b[2]! | 0x80; // a response: must be dropped, never answered
          return b;
        }
      }
    };
    const sock = dgram.createSocket("udp4");
    let replies = 0;
    sock.on("message", () => replies++);
    for (let i = 0; i < 10_000; i++) {
      sock.send(mangle(), s.address.port, "127.0.0.1");
      if (i % 200 === 0) await Bun.sleep(1); // let the server drain instead of overflowing the socket buffer
    }
    await Bun.sleep(50);
    sock.close();
    // Proof the packets reached the handler: the mangled-but-headed ones got FORMERR or answers.
    expect(replies).toBeGreaterThan(1000);
    for (let i = 0; i < 300; i++) {
      const c = net.connect(s.address.port, "127.0.0.1");
      c.on("error", () => {});
      const body = mangle();
      const framed = rand(2) ? Buffer.concat([Buffer.from([body.length >> 8, body.length & 0xff]), body]) : body;
      c.end(framed.subarray(0, rand(3) ? framed.length : rand(framed.length + 1)));
    }
    await Bun.sleep(100);
    expect(first(await udpAsk(s.address.port, query("web.vm")))).toBe("172.30.0.2");
    expect(first(await tcpAsk(s.address.port, query("web.vm")))).toBe("172.30.0.2");
  }, 60_000);

  test("a truncated query with an intact header gets FORMERR", async () => {
    const s = await start(new Map());
    const r = await udpAsk(s.address.port, query("web.vm", "A", 0x4321).subarray(0, 15));
    expect(r?.id).toBe(0x4321);
    expect(rcode(r)).toBe(1);
  });

  test("port in use: a clear error naming the address and dns_listen", async () => {
    const a = await start(new Map());
    const listen = `127.0.0.1:${a.address.port}`;
    const err = await startDnsServer({ listen, records: () => new Map() }).catch((e) => e);
    expect(err).toBeInstanceOf(BangerError);
    expect(err.code).toBe("unavailable");
    expect(err.message).toContain(listen);
    expect(err.hint).toContain("dns_listen");
  });

  test("TCP half taken: the same clear error and no UDP socket left behind", async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", () => r()));
    started.push({ close: () => new Promise<void>((r) => blocker.close(() => r())) });
    const port = (blocker.address() as net.AddressInfo).port;
    const err = await startDnsServer({ listen: `127.0.0.1:${port}`, records: () => new Map() }).catch((e) => e);
    expect(err.message).toContain(`127.0.0.1:${port}`);
    const probe = dgram.createSocket("udp4");
    await new Promise<void>((r, j) => probe.once("error", j).bind(port, "127.0.0.1", () => r()));
    probe.close();
  });

  test("bad listen address names the config key", async () => {
    const err = await startDnsServer({ listen: "localhost", records: () => new Map() }).catch((e) => e);
    expect(err.code).toBe("invalid_argument");
    expect(err.message).toContain("dns_listen");
    expect(parseHostPort("[::1]:53", null)).toEqual({ host: "::1", port: 53 });
    expect(parseHostPort("10.0.0.1", 53)).toEqual({ host: "10.0.0.1", port: 53 });
  });
});

describe("forwarding (the instance that serves guests)", () => {
  /** A fake upstream on loopback that answers every A query with 192.0.2.1, or stays silent. */
  async function fakeUpstream(silent = false): Promise<number> {
    const u = await startUpstream({ silent });
    started.push(u);
    return u.port;
  }

  test("non-.vm is relayed from the upstream with the client's id; .vm stays local", async () => {
    const up = await fakeUpstream();
    const s = await start(new Map([["web", "172.30.0.2"]]), { upstream: [`127.0.0.1:${up}`] });
    const r = await udpAsk(s.address.port, query("example.com", "A", 555));
    expect(r?.id).toBe(555);
    expect(first(r)).toBe("192.0.2.1");
    const t = await tcpAsk(s.address.port, query("example.com", "A", 556));
    expect(first(t)).toBe("192.0.2.1");
    expect(first(await udpAsk(s.address.port, query("web.vm")))).toBe("172.30.0.2");
  });

  test("a silent upstream is skipped for the next; all silent gives SERVFAIL", async () => {
    const dead = await fakeUpstream(true);
    const good = await fakeUpstream();
    const s1 = await start(new Map(), { upstream: [`127.0.0.1:${dead}`, `127.0.0.1:${good}`], upstreamTimeoutMs: 200 });
    expect(first(await udpAsk(s1.address.port, query("example.com")))).toBe("192.0.2.1");
    const s2 = await start(new Map(), { upstream: [`127.0.0.1:${dead}`], upstreamTimeoutMs: 200 });
    const r = await udpAsk(s2.address.port, query("example.com", "A", 9));
    expect(r?.id).toBe(9);
    expect(rcode(r)).toBe(2);
  });
});
