import { describe, expect, test } from "bun:test";
import { BangerError } from "../errors.ts";
import { hostSetup, hostTeardown, natAdd } from "./network.ts";
import { FakeHost, cfg, model, nftJson, setUpHost } from "../testing/fake-host.ts";
import { nftBaseScript } from "./network/nft.ts";

describe("hostSetup", () => {
  test("fresh host, nftables: bridge, mark, address, up, forwarding, TAPs, one nft script", async () => {
    const r = new FakeHost(model({}));
    const actions = await hostSetup({ runner: r, sudo: false }, cfg);
    expect(r.mutations()).toEqual([
      "ip link add banger0 type bridge",
      "ip link set dev banger0 alias banger ip_forward_was=0",
      "ip addr add 172.30.0.1/24 dev banger0",
      "ip link set dev banger0 up",
      "sysctl -q -w net.ipv6.conf.banger0.accept_ra=0",
      "sysctl -q -w net.ipv4.ip_forward=1",
      "ip tuntap add dev bgr0t0 mode tap user 1000 group 1000",
      "ip link set dev bgr0t0 master banger0 up",
      "ip tuntap add dev bgr0t1 mode tap user 1000 group 1000",
      "ip link set dev bgr0t1 master banger0 up",
      "nft -f -",
    ]);
    expect(r.stdin.at(-1)).toBe(nftBaseScript(cfg));
    expect(actions).toHaveLength(11);
  });

  test("the nft script: default deny from guests to the host, between guests and from outside; per-VM egress", () => {
    const s = nftBaseScript(cfg);
    const rule = (t: string) => s.split("\n").find((l) => l.endsWith(`comment "${t}"`)) ?? "";
    expect(s).toContain("add table inet banger_banger0");
    expect(s).toContain("add table bridge banger_banger0");
    expect(rule("banger:host-dns")).toContain('input iifname "banger0" ip daddr 172.30.0.1 meta l4proto { tcp, udp } th dport 53 accept');
    expect(rule("banger:host-deny")).toContain('input iifname "banger0" drop');
    expect(rule("banger:inbound")).toContain('forward oifname "banger0" drop');
    expect(rule("banger:isolate")).toContain('forward iifname "banger0" drop');
    expect(rule("banger:masq")).toContain('postrouting ip saddr 172.30.0.0/24 oifname != "banger0" masquerade');
    expect(rule("banger:port")).toContain("bridge banger_banger0 guest_in iifname vmap @ports");
    expect(rule("banger:no-port")).toContain(`guest_in iifname "bgr0t*" drop`);
    // The bridge family sees every bridge on the host: no rule may drop what is not ours.
    for (const l of s.split("\n").filter((x) => x.startsWith("add rule bridge"))) expect(l).toMatch(/iifname/);
    const order = ["banger:intra", "banger:replies", "banger:inbound", "banger:nat", "banger:egress", "banger:isolate"].map((c) => s.indexOf(`"${c}"`));
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(s).not.toContain("redirect");
  });

  test("guest DNS: the gateway's port 53 is redirected to the daemon's port", () => {
    const s = nftBaseScript({ ...cfg, guestDnsPort: 5300 });
    expect(s).toContain(
      'add rule inet banger_banger0 prerouting iifname "banger0" ip daddr 172.30.0.1 udp dport 53 redirect to :5300 comment "banger:dns-udp"',
    );
    expect(s).toContain("tcp dport 53 redirect to :5300");
  });

  test("already set up: nothing to do, nothing changed", async () => {
    const r = new FakeHost(model(setUpHost));
    expect(await hostSetup({ runner: r, sudo: false }, cfg)).toEqual([]);
    expect(r.mutations()).toEqual([]);
  });

  test("a TAP owned by someone else is recreated for the user", async () => {
    const r = new FakeHost(model({ ...setUpHost, taps: [{ ifname: "bgr0t0", user: 0, group: 0 }, setUpHost.taps![1]!] }));
    await hostSetup({ runner: r, sudo: false }, cfg);
    expect(r.mutations()).toEqual([
      "ip link del dev bgr0t0",
      "ip tuntap add dev bgr0t0 mode tap user 1000 group 1000",
      "ip link set dev bgr0t0 master banger0 up",
    ]);
  });

  test("a damaged table is repaired in one script; NAT entries live in the set and survive", async () => {
    const damaged = JSON.parse(nftJson(cfg)) as { nftables: any[] };
    damaged.nftables = damaged.nftables.filter((i) => i.rule?.comment !== "banger:isolate");
    const r = new FakeHost(model({ ...setUpHost, nftTable: JSON.stringify(damaged) }));
    expect(await hostSetup({ runner: r, sudo: false }, cfg)).toEqual(["repaired nftables tables banger_banger0"]);
    expect(r.stdin.at(-1)).not.toContain("flush set");
  });

  test("the iptables backend is refused, saying why and how to get nftables", async () => {
    const r = new FakeHost(model({ ...setUpHost, nftTable: null }));
    const err = await hostSetup({ runner: r, sudo: false }, { ...cfg, firewall: "iptables" }).catch((e) => e);
    expect(err.code).toBe("not_available");
    expect(err.message).toContain("bridge family");
    expect(err.hint).toContain("apt-get install nftables");
    expect(r.mutations().some((c) => c.startsWith("iptables") || c.startsWith("nft"))).toBe(false);
  });

  test("not root: privileged commands go through sudo -n, reads do not", async () => {
    const r = new FakeHost(model({}));
    await hostSetup({ runner: r, sudo: true }, cfg);
    for (const c of r.calls) {
      const isRead = (c[0] === "ip" && c[1] === "-j") || (c[0] === "sysctl" && c[1] === "-n");
      expect(c[0] === "sudo").toBe(!isRead);
    }
    expect(r.calls.find((c) => c.includes("tuntap") && c.includes("add"))?.slice(0, 2)).toEqual(["sudo", "-n"]);
    expect(r.calls.find((c) => c[0] === "ip" && c[1] === "-j")).toBeDefined();
  });

  test("sudo asking for a password becomes permission_denied with the setup hint", async () => {
    const r = new FakeHost((argv) => (argv[0] === "sudo" ? { code: 1, stderr: "sudo: a password is required\n" } : model({})(argv)));
    const err = await hostSetup({ runner: r, sudo: true }, cfg).catch((e) => e);
    expect(err).toBeInstanceOf(BangerError);
    expect(err.code).toBe("permission_denied");
    expect(err.hint).toContain("sudo banger host setup");
  });

  test("not root on a host without sudo: permission_denied saying so, not a missing firewall", async () => {
    const noSudo = {
      run: async (argv: string[]) => {
        if (argv[0] === "sudo") throw Object.assign(new Error("ENOENT: no such file or directory, posix_spawn 'sudo'"), { code: "ENOENT" });
        return { code: 0, stdout: "", stderr: "" };
      },
    };
    const err = await natAdd({ runner: noSudo, sudo: true }, cfg, { guestIp: "172.30.0.2", tap: "tap0" }).catch((e) => e);
    expect(err.code).toBe("permission_denied");
    expect(err.message).toContain("sudo is not installed");
    expect(err.hint).toContain("sudo banger host setup");
  });

  test("TAP names longer than IFNAMSIZ are refused before touching anything", async () => {
    const r = new FakeHost(model({}));
    const err = await hostSetup({ runner: r, sudo: false }, { ...cfg, bridge: "averylongbrname", tapCount: 100 }).catch((e) => e);
    expect(err.code).toBe("invalid_argument");
    expect(err.message).toContain("15");
    expect(r.calls).toEqual([]);
  });

  test("an interface with the bridge's name that is not a bridge is refused", async () => {
    const r = new FakeHost(model({ links: [{ ifname: "banger0", kind: "veth" }] }));
    const err = await hostSetup({ runner: r, sudo: false }, cfg).catch((e) => e);
    expect(err.code).toBe("failed_precondition");
    expect(err.message).toContain("banger0");
  });
});

describe("hostTeardown", () => {
  test("removes table, TAPs, bridge, and restores forwarding banger turned on", async () => {
    const r = new FakeHost(model(setUpHost));
    await hostTeardown({ runner: r, sudo: false }, cfg);
    expect(r.mutations()).toEqual([
      "nft delete table inet banger_banger0",
      "nft delete table bridge banger_banger0",
      "ip link del dev bgr0t0",
      "ip link del dev bgr0t1",
      "ip link del dev banger0",
      "sysctl -q -w net.ipv4.ip_forward=0",
    ]);
  });

  test("another banger bridge still needs forwarding: it inherits the memory instead", async () => {
    const links = [...setUpHost.links!, { ifname: "banger1", kind: "bridge", up: true, alias: "banger ip_forward_was=1" }];
    const r = new FakeHost(model({ ...setUpHost, links }));
    await hostTeardown({ runner: r, sudo: false }, cfg);
    expect(r.mutations()).toContain("ip link set dev banger1 alias banger ip_forward_was=0");
    expect(r.mutations().some((c) => c.includes("ip_forward=0") && c.startsWith("sysctl"))).toBe(false);
  });

  test("forwarding that was already on is left on", async () => {
    const links = setUpHost.links!.map((l) => (l.kind === "bridge" ? { ...l, alias: "banger ip_forward_was=1" } : l));
    const r = new FakeHost(model({ ...setUpHost, links }));
    await hostTeardown({ runner: r, sudo: false }, cfg);
    expect(r.mutations().some((c) => c.startsWith("sysctl"))).toBe(false);
  });

  test("nothing there: nothing done", async () => {
    const r = new FakeHost((argv) =>
      argv.join(" ").startsWith("nft delete table") ? { code: 1, stderr: "Error: No such file or directory" } : model({})(argv),
    );
    expect(await hostTeardown({ runner: r, sudo: false }, cfg)).toEqual([]);
  });

  test("chains an older banger wrote with iptables are removed too", async () => {
    const r = new FakeHost((argv) => {
      const a = argv.join(" ");
      if (a === "iptables -w -t filter -S BANGER-FWD-banger0") return { stdout: "-N BANGER-FWD-banger0\n-A BANGER-FWD-banger0 -j DROP\n" };
      if (a === "iptables -w -t filter -S FORWARD") return { stdout: "-A FORWARD -i banger0 -m comment --comment banger -j BANGER-FWD-banger0\n" };
      return model(setUpHost)(argv);
    });
    await hostTeardown({ runner: r, sudo: false }, cfg);
    expect(r.mutations()).toContain("iptables -w -t filter -D FORWARD -i banger0 -m comment --comment banger -j BANGER-FWD-banger0");
    expect(r.mutations()).toContain("iptables -w -t filter -X BANGER-FWD-banger0");
  });
});
