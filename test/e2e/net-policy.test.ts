// The sandbox boundary on real guests under QEMU: two VMs on a private bridge, an "outside
// world" in a network namespace of the test's own (198.18.x, two HTTP servers), and a listener
// on the host's gateway address. Policies and groups change live on the same two guests.
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { realGuestChecks, realHome, type RealHome } from "../../src/testing/real-env.ts";
import { projectRoot, testNeeds } from "../../src/testing/skip.ts";

const needs = realGuestChecks();
const T = 300_000;
let h: RealHome;
let gw = "";
let hostPort = 0;
let hostServer: ReturnType<typeof Bun.serve> | undefined;
const id = Math.random().toString(36).slice(2, 6);
const ns = `bgp${id}`;
const [hostIf, nsIf] = [`bgp${id}h`, `bgp${id}n`];
const out = `198.18.${Math.floor(Math.random() * 200) + 10}`;
const svc = `${out}.2`;
const other = `${out}.3`;
let outside: Bun.Subprocess | undefined;
let resolver: Bun.Subprocess | undefined;
/** The outside world's DNS: svc.test and other.test, each with its own address; everything else NXDOMAIN. */
const RESOLVER = `const p = require("dns-packet"); const s = require("node:dgram").createSocket("udp4");
const names = { "svc.test": process.argv[2], "other.test": process.argv[3] };
s.on("message", (m, r) => { const q = p.decode(m); const name = q.questions[0].name.toLowerCase(); const ip = names[name];
  s.send(p.encode({ type: "response", id: q.id, flags: 0x0180 | (ip ? 0 : 3), questions: q.questions, answers: ip && q.questions[0].type === "A" ? [{ type: "A", name, ttl: 60, data: ip }] : [] }), r.port, r.address); });
s.bind(53, process.argv[1], () => console.log("ready"));`;
const vms: Record<string, { ip: string; mac: string }> = {};

const sh = (cmd: string) => Bun.spawnSync(["sh", "-c", cmd], { stdout: "pipe", stderr: "pipe" });

beforeAll(async () => {
  if (needs.some(([ok]) => !ok)) return;
  sh(
    `ip netns add ${ns} && ip link add ${hostIf} type veth peer name ${nsIf} && ip link set ${nsIf} netns ${ns} && ip addr add ${out}.1/24 dev ${hostIf} && ip link set ${hostIf} up && ` +
      `ip netns exec ${ns} sh -c 'ip addr add ${svc}/24 dev ${nsIf} && ip addr add ${other}/24 dev ${nsIf} && ip link set ${nsIf} up && ip link set lo up && ip route add default via ${out}.1'`,
  );
  resolver = Bun.spawn(["ip", "netns", "exec", ns, process.execPath, "-e", RESOLVER, svc, svc, other], { cwd: projectRoot, stdout: "pipe", stderr: "inherit" });
  await (resolver.stdout as ReadableStream<Uint8Array>).getReader().read();
  // The daemon's guest resolver forwards to the outside world's DNS, never the host's.
  h = await realHome({ taps: 3, config: `dns_upstream = ["${svc}:53"]\n` });
  gw = h.subnet.split("/")[0]!;
  // A host service on the gateway address, as a dev database or docker API would listen.
  hostServer = Bun.serve({ hostname: gw, port: 0, fetch: () => new Response("host") });
  hostPort = hostServer.port!;
  outside = Bun.spawn(["ip", "netns", "exec", ns, "python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"], { stdout: "ignore", stderr: "ignore" });
  for (let i = 0; i < 100; i++) {
    if (
      await fetch(`http://${svc}:8000/`, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.ok,
        () => false,
      )
    )
      break;
    await Bun.sleep(200);
  }
}, 900_000);

afterAll(async () => {
  outside?.kill();
  resolver?.kill();
  await outside?.exited;
  sh(`ip link del ${hostIf}; ip netns del ${ns}`);
  hostServer?.stop(true);
  if (!h) return;
  await h.run(["vm", "delete", "--force", "na", "nb"]);
  await h.teardownNet();
  await h.cleanup();
});

const ssh = async (vm: string, script: string) => {
  const r = await h.run(["vm", "ssh", vm, "--", "sh", "-c", script]);
  return { ...r, out: r.stdout.trim() };
};
/** curl's exit code from the guest: 0 answered, 28 timed out (dropped), 7 refused. */
const curl = async (vm: string, url: string, extra = "") =>
  Number((await ssh(vm, `curl -s -o /dev/null -m 4 ${extra} ${url}; echo $?`)).out.split("\n").at(-1));
/** True when a TCP connection from the guest opens (whatever the service then says). */
const connects = async (vm: string, host: string, port: number, extra = "") => {
  const r = await ssh(vm, `curl -s -o /dev/null --connect-timeout 4 -m 5 -w '%{time_connect}' ${extra} http://${host}:${port}/; true`);
  return Number(r.out.split("\n").at(-1)) > 0;
};
const set = async (...args: string[]) => {
  const r = await h.run(["vm", "set", ...args]);
  if (r.code !== 0) throw new Error(`vm set ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
};

describe("network policy and the default-deny bridge on real guests (needs qemu, root, nft)", () => {
  testNeeds(
    "two guests boot under the default policy (none); the host still reaches their sshd",
    needs,
    async () => {
      for (const name of ["na", "nb"]) {
        const r = await h.run(["vm", "create", "--name", name]);
        if (r.code !== 0) throw new Error(`vm create ${name}: ${r.stderr}`);
        const v = JSON.parse((await h.run(["vm", "show", name, "--json"])).stdout);
        expect(v.net).toBe("none");
        vms[name] = { ip: v.ip, mac: v.mac };
      }
      expect((await ssh("na", "echo ok")).out).toBe("ok");
    },
    T,
  );

  testNeeds(
    "default policy: a host service on the gateway is unreachable, DNS on the gateway is reachable, the outside is not",
    needs,
    async () => {
      expect(await fetch(`http://${gw}:${hostPort}/`).then((r) => r.text())).toBe("host");
      expect(await curl("na", `http://${gw}:${hostPort}/`)).toBe(28);
      expect(await connects("na", gw, 53)).toBe(true);
      expect(await curl("na", `http://${svc}:8000/`)).toBe(28);
    },
    T,
  );

  testNeeds(
    "guests reach each other only within one group (vm set --group, live)",
    needs,
    async () => {
      expect(await connects("na", vms.nb!.ip, 22)).toBe(false);
      expect(await set("na", "nb", "--group", "g1")).toContain("group g1");
      expect(await connects("na", vms.nb!.ip, 22)).toBe(true);
      expect(await connects("nb", vms.na!.ip, 22)).toBe(true);
      await set("nb", "--group", "");
      expect(await connects("na", vms.nb!.ip, 22)).toBe(false);
    },
    T,
  );

  testNeeds(
    "vm set --net applies live: allow:<CIDR:port> reaches only that; nat reaches both; none neither; the host never",
    needs,
    async () => {
      await set("na", "--net", `allow:${svc}:8000`);
      expect(await curl("na", `http://${svc}:8000/`)).toBe(0);
      expect(await curl("na", `http://${other}:8000/`)).toBe(28);
      expect(await curl("na", `http://${gw}:${hostPort}/`)).toBe(28);
      expect(await set("na", "--net", "nat")).toContain("net nat");
      expect(await curl("na", `http://${svc}:8000/`)).toBe(0);
      expect(await curl("na", `http://${other}:8000/`)).toBe(0);
      expect(await curl("na", `http://${gw}:${hostPort}/`)).toBe(28);
      await set("na", "--net", "none");
      expect(await curl("na", `http://${svc}:8000/`)).toBe(28);
      expect(await curl("na", `http://${other}:8000/`)).toBe(28);
    },
    T,
  );

  testNeeds(
    "--net allow:svc.test: the guest fetches http://svc.test/ and fails for other.test, its raw IP and the host; --net nat: both",
    needs,
    async () => {
      await set("na", "--net", "allow:svc.test");
      expect(await curl("na", "http://svc.test:8000/")).toBe(0);
      // other.test is REFUSED by the resolver (curl: 6, could not resolve), its address is closed.
      expect(await curl("na", "http://other.test:8000/")).toBe(6);
      expect(await curl("na", `http://${other}:8000/`)).toBe(28);
      expect(await curl("na", `http://${gw}:${hostPort}/`)).toBe(28);
      await set("na", "--net", "nat");
      expect(await curl("na", "http://svc.test:8000/")).toBe(0);
      expect(await curl("na", "http://other.test:8000/")).toBe(0);
      await set("na", "--net", "none");
      expect(await curl("na", "http://svc.test:8000/")).not.toBe(0);
    },
    T,
  );

  testNeeds(
    "a guest that takes a NAT guest's address gets nothing through, and that guest is unaffected",
    needs,
    async () => {
      await set("nb", "--net", "nat");
      const b = vms.nb!.ip;
      expect((await ssh("na", `ip addr add ${b}/32 dev eth0`)).code).toBe(0);
      try {
        // As B: no way out, no DNS on the gateway, nothing to B's peers.
        expect(await curl("na", `http://${svc}:8000/`, `--interface ${b}`)).toBe(28);
        expect(await connects("na", gw, 53, `--interface ${b}`)).toBe(false);
        // B itself: still out, still resolving, still reachable.
        expect(await curl("nb", `http://${svc}:8000/`)).toBe(0);
        expect(await connects("nb", gw, 53)).toBe(true);
        expect((await ssh("nb", "echo ok")).out).toBe("ok");
      } finally {
        await ssh("na", `ip addr del ${b}/32 dev eth0`);
      }
      // Its own address still works for what its policy allows (DNS on the gateway).
      expect(await connects("na", gw, 53)).toBe(true);
    },
    T,
  );

  testNeeds(
    "a router advertisement sent from a guest changes no route on the host",
    needs,
    async () => {
      const before = sh("ip -6 route show table all").stdout.toString();
      // A raw ICMPv6 RA to all-nodes announcing 2001:db8:bad::/64 and a default route (perl-base is in every Debian).
      const ra = `perl -MSocket=:all -e '
      socket(my $s, AF_INET6, SOCK_RAW, 58) or die "socket: $!";
      my $if = 0; open(my $f, "<", "/sys/class/net/eth0/ifindex") and $if = <$f> + 0;
      setsockopt($s, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, pack("i", 255)) or die;
      setsockopt($s, IPPROTO_IPV6, IPV6_MULTICAST_IF, pack("i", $if)) or die;
      my $pfx = pack("CCCCNNN", 3, 4, 64, 0xc0, 86400, 14400, 0) . inet_pton(AF_INET6, "2001:db8:bad::");
      my $msg = pack("CCnCCnNN", 134, 0, 0, 64, 0, 1800, 0, 0) . $pfx;
      for (1..3) { send($s, $msg, 0, pack_sockaddr_in6(0, inet_pton(AF_INET6, "ff02::1"), $if, 0)) or die "send: $!"; select(undef, undef, undef, 0.3) }
      print "sent\\n"'`;
      const sent = await ssh("na", ra);
      expect(sent.out).toBe("sent");
      await Bun.sleep(1000);
      const after = sh("ip -6 route show table all").stdout.toString();
      expect(after).not.toContain("2001:db8:bad");
      expect(after.split("\n").filter((l) => l.includes(h.bridge) && !l.includes("fe80::"))).toEqual(
        before.split("\n").filter((l) => l.includes(h.bridge) && !l.includes("fe80::")),
      );
      expect(sh(`sysctl -n net.ipv6.conf.${h.bridge}.accept_ra`).stdout.toString().trim()).toBe("0");
    },
    T,
  );
});
