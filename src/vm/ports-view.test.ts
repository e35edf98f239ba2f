import { expect, test } from "bun:test";
import type { ListeningSocket } from "../agent/protocol.ts";
import { buildPortsView, collapseSockets, isReachable, MAX_PROBED_PORTS, PROBE_CONCURRENCY, renderPortsTable, type Probe } from "./ports-view.ts";

const web = { pid: 410, process: "python3", command: "python3 -m http.server 8080" };
const sockets: ListeningSocket[] = [
  { proto: "tcp", address: "::", port: 8080, ...web },
  { proto: "tcp", address: "0.0.0.0", port: 8080, ...web },
  { proto: "tcp", address: "0.0.0.0", port: 22, pid: 200, process: "sshd", command: "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups" },
  { proto: "tcp", address: "::", port: 22, pid: 200, process: "sshd", command: "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups" },
  { proto: "tcp", address: "::", port: 8443, pid: 500, process: "caddy", command: "caddy run\n--config  /etc/Caddyfile" },
  { proto: "tcp", address: "127.0.0.1", port: 5432, pid: 300, process: "postgres", command: "postgres -D /var/lib/pg" },
  { proto: "tcp", address: "::1", port: 5432, pid: 300, process: "postgres", command: "postgres -D /var/lib/pg" },
  { proto: "udp", address: "127.0.0.53", port: 53, pid: 90, process: "systemd-resolve" },
  { proto: "udp", address: "0.0.0.0", port: 5353, pid: 91, process: "avahi daemon", command: "avahi-daemon: running [t1.local]" },
  { proto: "udp", address: "::", port: 5353, pid: 91, process: "avahi daemon", command: "avahi-daemon: running [t1.local]" },
  { proto: "tcp", address: "172.30.0.5", port: 9000 },
  { proto: "tcp", address: "fe80::1", port: 9100 },
];

const probe: Probe = async (host, port) => {
  expect(host).toBe("172.30.0.5");
  return port === 8443 ? "https" : port === 8080 ? "http" : null;
};

test("reachability: wildcards and IPv4 yes, loopback and IPv6-only no", () => {
  expect(["0.0.0.0", "::", "*", "172.30.0.5", "::ffff:172.30.0.5"].map(isReachable)).toEqual([true, true, true, true, true]);
  expect(["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1", "fe80::1", "2001:db8::1"].map(isReachable)).toEqual([false, false, false, false, false, false]);
});

test("dual-stack duplicates collapse into one row showing the IPv4 wildcard", () => {
  const rows = collapseSockets("t1", sockets);
  expect(rows.map((r) => `${r.proto} ${r.endpoint} ${r.address}`)).toEqual([
    "tcp t1.vm:22 0.0.0.0",
    "tcp t1.vm:8080 0.0.0.0",
    "tcp t1.vm:8443 ::",
    "tcp t1.vm:9000 172.30.0.5",
    "udp t1.vm:5353 0.0.0.0",
  ]);
});

test("different processes on the same port stay separate rows", () => {
  const rows = collapseSockets("t1", [
    { proto: "tcp", address: "0.0.0.0", port: 80, pid: 1 },
    { proto: "tcp", address: "::", port: 80, pid: 2 },
  ]);
  expect(rows.map((r) => r.pid)).toEqual([1, 2]);
});

test("all: loopback and IPv6-only listeners appear with their literal address", () => {
  const rows = collapseSockets("t1", sockets, true).filter((r) => !r.reachable);
  expect(rows.map((r) => r.endpoint)).toEqual(["127.0.0.1:5432", "[::1]:5432", "[fe80::1]:9100", "127.0.0.53:53"]);
});

test("TCP rows are probed once per port and become URLs; UDP is never probed", async () => {
  const calls: number[] = [];
  const view = await buildPortsView(sockets, {
    vmName: "t1",
    probeHost: "172.30.0.5",
    probe: (h, p) => (calls.push(p), probe(h, p)),
  });
  expect(calls.sort((a, b) => a - b)).toEqual([22, 8080, 8443, 9000]);
  expect(view.vm).toBe("t1");
  expect(view.ports.map((r) => r.endpoint)).toEqual(["t1.vm:22", "http://t1.vm:8080", "https://t1.vm:8443", "t1.vm:9000", "t1.vm:5353"]);
  expect(view.ports[1]).toEqual({ proto: "tcp", endpoint: "http://t1.vm:8080", reachable: true, scheme: "http", address: "0.0.0.0", port: 8080, ...web });
  expect(view.ports[3]).toEqual({ proto: "tcp", endpoint: "t1.vm:9000", reachable: true, address: "172.30.0.5", port: 9000 });
});

test("a probe that throws is treated as not-web", async () => {
  const view = await buildPortsView([{ proto: "tcp", address: "0.0.0.0", port: 1 }], {
    vmName: "t1",
    probeHost: "172.30.0.5",
    probe: () => Promise.reject(new Error("ECONNRESET")),
  });
  expect(view.ports[0]!.endpoint).toBe("t1.vm:1");
});

test("table: aligned columns, dashes for unknown process, flattened command lines", async () => {
  const view = await buildPortsView(sockets, { vmName: "t1", probeHost: "172.30.0.5", probe });
  expect(renderPortsTable(view, { commandWidth: 40 })).toBe(
    [
      "PROTO  ENDPOINT            PROCESS       COMMAND",
      "tcp    t1.vm:22            sshd          sshd: /usr/sbin/sshd -D [listener] 0 of…",
      "tcp    http://t1.vm:8080   python3       python3 -m http.server 8080",
      "tcp    https://t1.vm:8443  caddy         caddy run --config /etc/Caddyfile",
      "tcp    t1.vm:9000          -             -",
      "udp    t1.vm:5353          avahi daemon  avahi-daemon: running [t1.local]",
    ].join("\n"),
  );
  expect(renderPortsTable({ vm: "t1", ports: [] })).toBe("no listening ports in t1");
});

test("a guest listing a thousand ports gets at most MAX_PROBED_PORTS probes, PROBE_CONCURRENCY at a time; guest text is printable", async () => {
  let inFlight = 0;
  let most = 0;
  let calls = 0;
  const probe = async () => {
    calls++;
    most = Math.max(most, ++inFlight);
    await Bun.sleep(1);
    inFlight--;
    return "http" as const;
  };
  const sockets = Array.from({ length: 1000 }, (_, i) => ({
    proto: "tcp" as const,
    address: "0.0.0.0",
    port: i + 1,
    process: "\x1b]52;c;eA==\x07evil",
    command: "a\x1b[2Jb",
  }));
  const view = await buildPortsView(sockets, { vmName: "t1", probeHost: "10.0.0.2", probe, dropped: 5 });
  expect(calls).toBe(MAX_PROBED_PORTS);
  expect(most).toBeLessThanOrEqual(PROBE_CONCURRENCY);
  expect(view.ports).toHaveLength(1000);
  expect(view.dropped).toBe(5);
  const table = renderPortsTable(view);
  expect(table).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
  expect(table).toContain("5 more listeners not shown");
  expect(view.ports[0]!.process).toBe("\x1b]52;c;eA==\x07evil"); // --json keeps the exact string
});
