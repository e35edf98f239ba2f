// Real host networking as root: a bridge, TAPs and firewall rules of our own (unique names, a
// 172.29.x.0/24 subnet, a 198.18.x.0/24 "outside" inside a network namespace). No packet
// leaves the machine: the "internet" is a netns reached through a veth routed by the host.
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { readFileSync } from "node:fs";
import { startDnsServer } from "../../src/host/dns-server.ts";
import { hostRunner } from "../../src/host/runner.ts";
import { type HostNetConfig, hostSetup, hostStatus, hostTeardown, natAdd, natRemove, tapList } from "../../src/host/network.ts";
import { nftFirewall } from "../../src/host/network/nft.ts";
import { groupsScript, vmApplyScript } from "../../src/host/network/nft-vm.ts";
import { hasBin, isRoot, testNeeds } from "../../src/testing/skip.ts";

const needs: Array<[boolean, string]> = [
  [isRoot, "needs root"],
  [hasBin("ip"), "needs ip (iproute2)"],
  [hasBin("nft"), "needs nft (nftables)"],
];

const deps = { runner: hostRunner, sudo: false };
const sh = async (argv: string[]) => (await hostRunner.run(argv, { allowFailure: true })).stdout;
const readForwarding = () => readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8").trim();
const rand = (n: number) => Math.floor(Math.random() * n);
const id = rand(0x10000).toString(16).padStart(4, "0");

/** A TCP server in the "outside" netns that tells each client the address it saw. */
const SERVER = `Bun.listen({ hostname: process.argv[1], port: 8080, socket: { open(s) { s.end(s.remoteAddress + "\\n"); }, data() {} } }); console.log("ready");`;
/** A client in the "guest" netns: prints what the server said, or FAILED after a bounded wait. */
const CLIENT = `const t = setTimeout(() => { console.log("FAILED timeout"); process.exit(0); }, 3000);
const c = require("node:net").connect({ host: process.argv[1], port: 8080, localAddress: process.argv[2] || undefined });
c.on("data", (d) => { console.log(String(d).trim()); clearTimeout(t); process.exit(0); });
c.on("error", (e) => { console.log("FAILED " + e.message); process.exit(0); });`;

function suite(kind: "nftables", letter: string) {
  const third = 1 + rand(250);
  const bridge = `bgt${id}${letter}`;
  const dnsPort = 20000 + rand(20000);
  const cfg: HostNetConfig = {
    bridge,
    subnet: `172.29.${third}.1/24`,
    tapCount: 3,
    owner: { uid: 65534, gid: 65534 },
    firewall: kind,
    guestDnsPort: dnsPort,
  };
  const guestIp = `172.29.${third}.2`;
  const outHost = `198.18.${third}.1`;
  const outServer = `198.18.${third}.2`;
  const nsGuest = `${bridge}g`;
  const nsOut = `${bridge}o`;
  const nsPeer = `${bridge}b`;
  let peerServer: Bun.Subprocess<"ignore", "pipe", "inherit"> | undefined;
  let forwardingBefore = "";
  let server: Bun.Subprocess<"ignore", "pipe", "inherit"> | undefined;

  const firewallSnapshot = async () =>
    (await sh(["nft", "list", "table", "inet", `banger_${bridge}`])) + (await sh(["nft", "list", "table", "bridge", `banger_${bridge}`]));
  // Bridge timers tick on their own; everything else in `ip -d link` must stay put.
  const linkSnapshot = async () =>
    ((await sh(["ip", "-d", "link", "show", "dev", bridge])) + (await sh(["ip", "-d", "link", "show", "master", bridge]))).replace(
      /(\w+_timer)\s+[\d.]+/g,
      "$1",
    );
  const bangerTraces = async () => {
    // iptables only where installed: banger writes nftables, and a fresh Debian has no iptables.
    const fw = (await sh(["nft", "list", "ruleset"])) + (hasBin("iptables-save") ? await sh(["iptables-save"]) : "");
    const links = await sh(["ip", "-o", "link", "show"]);
    return [...fw.split("\n"), ...links.split("\n")].filter((l) => l.includes(bridge) || l.includes(`banger_${bridge}`));
  };
  const guestFetch = async () => (await sh(["ip", "netns", "exec", nsGuest, process.execPath, "-e", CLIENT, outServer])).trim();

  describe(`host network as root (${kind}, bridge ${bridge})`, () => {
    beforeAll(() => {
      if (isRoot) forwardingBefore = readForwarding();
    });

    afterAll(async () => {
      if (!isRoot) return;
      server?.kill();
      peerServer?.kill();
      for (const ns of [nsGuest, nsOut, nsPeer]) await sh(["ip", "netns", "del", ns]);
      for (const dev of [`${bridge}vg`, `${bridge}vo`, `${bridge}vb`]) await sh(["ip", "link", "del", dev]);
      await hostTeardown(deps, cfg).catch((e) => console.error(`teardown: ${e.message}`));
      // Belt and braces: nothing of ours may survive a failed run.
      await sh(["ip", "link", "del", bridge]);
      for (const t of await tapList(deps, cfg).catch(() => [])) await sh(["ip", "link", "del", t.name]);
      // Put forwarding back only if no other banger bridge (someone else's) still relies on it.
      const others = (await sh(["ip", "-o", "link", "show", "type", "bridge"])).includes("banger ip_forward_was=");
      if (forwardingBefore && !others) await sh(["sysctl", "-q", "-w", `net.ipv4.ip_forward=${forwardingBefore}`]);
    });

    testNeeds(`setup twice as root: the second run changes nothing (${kind})`, needs, async () => {
      const first = await hostSetup(deps, cfg);
      expect(first.length).toBeGreaterThan(0);
      const links = await linkSnapshot();
      const rules = await firewallSnapshot();
      expect(rules).toContain("banger:isolate");
      expect(await hostSetup(deps, cfg)).toEqual([]);
      expect(await linkSnapshot()).toBe(links);
      expect(await firewallSnapshot()).toBe(rules);
      const taps = await tapList(deps, cfg);
      expect(taps.map((t) => t.name)).toEqual([`bgr${bridge}t0`, `bgr${bridge}t1`, `bgr${bridge}t2`]);
      expect(taps.every((t) => t.uid === 65534 && t.master === bridge && t.up)).toBe(true);
      const status = await hostStatus(deps, cfg);
      expect(status).toMatchObject({ ready: true, firewall: kind, forwarding: true, rulesPresent: true });
    });

    testNeeds(
      `NAT through netns as root: a guest reaches the outside only with natAdd (${kind})`,
      needs,
      async () => {
        await hostSetup(deps, cfg);
        const ip = (...a: string[]) => hostRunner.run(["ip", ...a]);
        await ip("netns", "add", nsGuest);
        await ip("netns", "add", nsOut);
        // The guest: a veth whose host end sits on the bridge, standing in for a VM's TAP.
        await ip("link", "add", `${bridge}vg`, "type", "veth", "peer", "name", `${bridge}gp`);
        await ip("link", "set", `${bridge}vg`, "master", bridge, "up");
        await ip("link", "set", `${bridge}gp`, "netns", nsGuest);
        await ip("-n", nsGuest, "addr", "add", `${guestIp}/24`, "dev", `${bridge}gp`);
        await ip("-n", nsGuest, "link", "set", `${bridge}gp`, "up");
        await ip("-n", nsGuest, "route", "add", "default", "via", `172.29.${third}.1`);
        // The stand-in's port carries only its own MAC and address, as a VM's TAP would.
        const mac = JSON.parse(await sh(["ip", "-n", nsGuest, "-j", "link", "show", `${bridge}gp`]))[0].address;
        await hostRunner.run(["nft", "-f", "-"], { stdin: vmApplyScript(bridge, { ip: guestIp, mac, tap: `${bridge}vg`, policy: { mode: "none" } }) });
        // The outside world: routed by the host, with a default route back so that only
        // banger's drop rule (not a missing route) can stop an un-NATed guest.
        await ip("link", "add", `${bridge}vo`, "type", "veth", "peer", "name", `${bridge}op`);
        await ip("addr", "add", `${outHost}/24`, "dev", `${bridge}vo`);
        await ip("link", "set", `${bridge}vo`, "up");
        await ip("link", "set", `${bridge}op`, "netns", nsOut);
        await ip("-n", nsOut, "addr", "add", `${outServer}/24`, "dev", `${bridge}op`);
        await ip("-n", nsOut, "link", "set", `${bridge}op`, "up");
        await ip("-n", nsOut, "route", "add", "default", "via", outHost);
        server = Bun.spawn(["ip", "netns", "exec", nsOut, process.execPath, "-e", SERVER, outServer], { stdin: "ignore", stdout: "pipe", stderr: "inherit" });
        const reader = server.stdout.getReader();
        expect(new TextDecoder().decode((await reader.read()).value)).toContain("ready");

        expect(await guestFetch()).toStartWith("FAILED");
        expect(await natAdd(deps, cfg, { guestIp, tap: `${bridge}vg` })).toHaveLength(1);
        expect(await natAdd(deps, cfg, { guestIp, tap: `${bridge}vg` })).toEqual([]);
        // The server sees the host's outside address: the guest was masqueraded.
        expect(await guestFetch()).toBe(outHost);
        // Another MAC on the same port gets nothing through; its own again, and it does.
        await ip("-n", nsGuest, "link", "set", `${bridge}gp`, "address", "02:00:00:00:00:99");
        expect(await guestFetch()).toStartWith("FAILED");
        await ip("-n", nsGuest, "link", "set", `${bridge}gp`, "address", mac);
        expect(await guestFetch()).toBe(outHost);
        expect((await hostStatus(deps, cfg)).nat).toEqual([{ guestIp, tap: `${bridge}vg` }]);
        expect(await natRemove(deps, cfg, { guestIp })).toHaveLength(1);
        expect(await natRemove(deps, cfg, { guestIp })).toEqual([]);
        expect(await guestFetch()).toStartWith("FAILED");
        // Control: without banger's rules the same guest gets out un-masqueraded, so the
        // failures above were banger's drop rule and not a routing gap in the test.
        await nftFirewall(deps, cfg).remove();
        expect(await guestFetch()).toBe(guestIp);
        expect((await hostSetup(deps, cfg)).length).toBeGreaterThan(0);
        expect(await guestFetch()).toStartWith("FAILED");
        await hostRunner.run(["nft", "-f", "-"], { stdin: vmApplyScript(bridge, { ip: guestIp, mac, tap: `${bridge}vg`, policy: { mode: "none" } }) });
      },
      30_000,
    );

    testNeeds(
      `guest DNS as root: the gateway's port 53 reaches the daemon's unprivileged port (${kind})`,
      [...needs, [hasBin("dig"), "needs dig"]],
      async () => {
        await hostSetup(deps, cfg);
        const dns = await startDnsServer({ listen: `172.29.${third}.1:${dnsPort}`, records: () => new Map([["web", guestIp]]) });
        try {
          const dig = (...a: string[]) => sh(["ip", "netns", "exec", nsGuest, "dig", `@172.29.${third}.1`, "+short", "+time=1", "+tries=1", ...a]);
          expect((await dig("web.vm")).trim()).toBe(guestIp);
          expect((await dig("+tcp", "WEB.vm.")).trim()).toBe(guestIp);
        } finally {
          await dns.close();
        }
      },
      30_000,
    );

    testNeeds(
      `stand-in guests reach each other only within a group; a borrowed address gets nothing through (${kind})`,
      needs,
      async () => {
        await hostSetup(deps, cfg);
        const ip = (...a: string[]) => hostRunner.run(["ip", ...a]);
        const peerIp = `172.29.${third}.3`;
        const nft = (script: string) => hostRunner.run(["nft", "-f", "-"], { stdin: script });
        await ip("netns", "add", nsPeer);
        await ip("link", "add", `${bridge}vb`, "type", "veth", "peer", "name", `${bridge}bp`);
        await ip("link", "set", `${bridge}vb`, "master", bridge, "up");
        await ip("link", "set", `${bridge}bp`, "netns", nsPeer);
        await ip("-n", nsPeer, "addr", "add", `${peerIp}/24`, "dev", `${bridge}bp`);
        await ip("-n", nsPeer, "link", "set", `${bridge}bp`, "up");
        const macOf = async (ns: string, dev: string) => JSON.parse(await sh(["ip", "-n", ns, "-j", "link", "show", dev]))[0].address as string;
        const a = { ip: guestIp, mac: await macOf(nsGuest, `${bridge}gp`), tap: `${bridge}vg`, policy: { mode: "none" as const } };
        const b = { ip: peerIp, mac: await macOf(nsPeer, `${bridge}bp`), tap: `${bridge}vb`, policy: { mode: "none" as const } };
        await nft(vmApplyScript(bridge, a));
        await nft(vmApplyScript(bridge, b));
        peerServer = Bun.spawn(["ip", "netns", "exec", nsPeer, process.execPath, "-e", SERVER, peerIp], { stdin: "ignore", stdout: "pipe", stderr: "inherit" });
        expect(new TextDecoder().decode((await peerServer.stdout.getReader().read()).value)).toContain("ready");
        const toPeer = async (from?: string) =>
          (await sh(["ip", "netns", "exec", nsGuest, process.execPath, "-e", CLIENT, peerIp, ...(from ? [from] : [])])).trim();
        expect(await toPeer()).toStartWith("FAILED");
        await nft(
          groupsScript(bridge, [
            { ...a, group: "g" },
            { ...b, group: "g" },
          ]),
        );
        expect(await toPeer()).toBe(guestIp);
        // An address that is not its own gets nothing through, even to a group peer.
        const borrowed = `172.29.${third}.4`;
        await ip("-n", nsGuest, "addr", "add", `${borrowed}/32`, "dev", `${bridge}gp`);
        expect(await toPeer(borrowed)).toStartWith("FAILED");
        await ip("-n", nsGuest, "addr", "del", `${borrowed}/32`, "dev", `${bridge}gp`);
        expect(await toPeer()).toBe(guestIp);
        await nft(groupsScript(bridge, []));
        expect(await toPeer()).toStartWith("FAILED");
      },
      60_000,
    );

    testNeeds(`teardown as root leaves no bridge, TAP or rule of ours (${kind})`, needs, async () => {
      await hostSetup(deps, cfg);
      await natAdd(deps, cfg, { guestIp, tap: `bgr${bridge}t0` });
      // The stand-ins for guest and outside are the test's own, not banger's: remove them first.
      server?.kill();
      peerServer?.kill();
      await server?.exited;
      for (const ns of [nsGuest, nsOut, nsPeer]) await sh(["ip", "netns", "del", ns]);
      for (const dev of [`${bridge}vg`, `${bridge}vo`, `${bridge}vb`]) await sh(["ip", "link", "del", dev]);
      const actions = await hostTeardown(deps, cfg);
      expect(actions).toContain(`removed bridge ${bridge}`);
      expect(await bangerTraces()).toEqual([]);
      expect(await tapList(deps, cfg)).toEqual([]);
      expect(await hostTeardown(deps, cfg)).toEqual([]);
      // Forwarding is back as found, unless another banger bridge (someone else's) still needs it.
      const others = (await sh(["ip", "-o", "link", "show", "type", "bridge"])).includes("banger ip_forward_was=");
      if (!others) expect(readForwarding()).toBe(forwardingBefore);
    });
  });
}

suite("nftables", "n");
