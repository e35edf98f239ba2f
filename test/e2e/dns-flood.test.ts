// DNS over TCP against the real daemon process: clients that pipeline queries and never read
// the replies must not grow the daemon. Memory is read from /proc/<pid>/status (VmRSS).
import { afterAll, describe, expect } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import net from "node:net";
import { bangerBin, TestHome } from "../../src/testing/cli.ts";
import { dnsQuery, rcodeOf, tcpFrame, udpAsk } from "../../src/testing/dns-client.ts";
import { testNeeds } from "../../src/testing/skip.ts";
import { TCP_LIMITS } from "../../src/host/dns-tcp.ts";

const MiB = 1024 * 1024;
const FLOOD_BYTES = 100 * MiB;
const RSS_LIMIT = 150 * MiB;

const h = new TestHome();
afterAll(() => h.cleanup());

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Writes `bytes` of pipelined `.vm` queries, never reading; resolves with what the kernel took and whether the server closed it. */
function flood(port: number, from: string, bytes: number, deadline: number): Promise<{ written: number; closed: boolean; socket: net.Socket }> {
  const chunk = Buffer.concat(Array.from({ length: 4096 }, (_, i) => tcpFrame(dnsQuery(`flood${i % 97}.vm`, "A", i))));
  return new Promise((resolve) => {
    const c = net.connect({ port, host: "127.0.0.1", localAddress: from });
    let closed = false;
    c.on("error", () => {});
    c.on("close", () => (closed = true));
    c.pause(); // never read a reply
    const finish = () => resolve({ written: c.bytesWritten, closed, socket: c });
    const pump = async () => {
      while (!closed && c.bytesWritten < bytes && Date.now() < deadline) {
        if (!c.write(chunk)) await Promise.race([new Promise((r) => c.once("drain", r)), Bun.sleep(250)]);
      }
      finish();
    };
    c.on("connect", () => void pump());
    c.on("close", () => c.connecting && finish());
  });
}

describe("DNS over TCP flood against the daemon", () => {
  testNeeds(
    "100 MiB of pipelined queries never read keep the daemon under 150 MiB RSS; it keeps answering and drops the stalled clients",
    [[existsSync(bangerBin), "dist/banger not built (bun run build)"]],
    async () => {
      const status = JSON.parse((await h.run(["daemon", "status", "--json"])).stdout);
      const pid: number = status.pid;
      const port = Number(status.dns.split(":").at(-1));
      const before = rssBytes(pid);
      let peak = before;
      const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 50);
      // As many connections as the daemon admits, from several loopback sources, plus some it must refuse.
      const per = TCP_LIMITS.maxConnectionsPerSource;
      const sources = Array.from({ length: Math.ceil(TCP_LIMITS.maxConnections / per) + 2 }, (_, i) => `127.0.0.${20 + i}`);
      const conns = sources.flatMap((from) => Array.from({ length: per }, () => from));
      const deadline = Date.now() + 15_000;
      const started = Date.now();
      const results = await Promise.all(conns.map((from) => flood(port, from, FLOOD_BYTES / conns.length, deadline)));
      const written = results.reduce((n, r) => n + r.written, 0);
      const during = await udpAsk(port, dnsQuery("nobody.vm"), { timeoutMs: 3000 });
      const statusDuring = await h.run(["daemon", "status", "--json"]);
      // The stalled clients are closed once idle; wait for that, sampling memory all along.
      for (let i = 0; i < 100 && results.some((r) => !r.socket.destroyed && !r.socket.closed); i++) await Bun.sleep(200);
      const open = results.filter((r) => !r.socket.destroyed && !r.socket.closed).length;
      clearInterval(sampler);
      peak = Math.max(peak, rssBytes(pid));
      console.log(
        `dns tcp flood: ${conns.length} connections, ${(written / MiB).toFixed(1)} MiB of queries sent in ${((Date.now() - started) / 1000).toFixed(1)} s (attempted ${FLOOD_BYTES / MiB} MiB); daemon RSS ${(before / MiB).toFixed(1)} MiB before, peak ${(peak / MiB).toFixed(1)} MiB (limit ${RSS_LIMIT / MiB}); still open after idle: ${open}`,
      );
      for (const r of results) r.socket.destroy();
      expect(peak).toBeLessThan(RSS_LIMIT);
      expect(rcodeOf(during)).toBe(3); // NXDOMAIN: the daemon answered while flooded
      expect(statusDuring.code).toBe(0);
      expect(open).toBe(0);
    },
    90_000,
  );
});
