import { describe, expect, test } from "bun:test";
import { BangerError } from "../errors.ts";
import { RecordingRunner, type RunOptions, type RunResult } from "./runner.ts";
import { type HostNetConfig, detectFirewall, hostSetup, hostStatus, hostTeardown, natAdd, natRemove, parseSubnet, systemdUnitText, tapNames } from "./network.ts";
import { nftBaseRules, nftBaseScript } from "./network/nft.ts";

/** A RecordingRunner that also keeps stdin, answering from a small model of the host. */
class FakeHost extends RecordingRunner {
  readonly stdin: Array<string | undefined> = [];
  constructor(answer: (argv: string[]) => Partial<RunResult> | undefined) {
    super(answer);
  }
  override async run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    this.stdin.push(opts.stdin === undefined ? undefined : String(opts.stdin));
    return super.run(argv, opts);
  }
  /** The calls that change the host (reads filtered out), joined for readability. */
  mutations(): string[] {
    const reads = /^(sudo -n )?(ip -j|sysctl -n|nft -j list|nft list|iptables -w -t \S+ -S|iptables -w -S|cat |test -e|systemctl is-enabled)/;
    return this.calls.map((c) => c.join(" ")).filter((c) => !reads.test(c));
  }
}

interface HostModel {
  links?: Array<{ ifname: string; kind?: string; master?: string; up?: boolean; alias?: string }>;
  taps?: Array<{ ifname: string; user: number; group: number }>;
  addrs?: string[];
  forwarding?: "0" | "1";
  nftTable?: string | null;
  nft?: boolean;
}

function model(m: HostModel): (argv: string[]) => Partial<RunResult> | undefined {
  return (full) => {
    const argv = full[0] === "sudo" ? full.slice(2) : full;
    const cmd = argv.join(" ");
    if (cmd === "ip -j -d link show") {
      const links = (m.links ?? []).map((l) => ({
        ifname: l.ifname,
        flags: l.up ? ["UP"] : [],
        master: l.master,
        ifalias: l.alias,
        linkinfo: l.kind ? { info_kind: l.kind } : undefined,
      }));
      return { stdout: JSON.stringify(links) };
    }
    if (cmd === "ip -j tuntap show") return { stdout: JSON.stringify(m.taps ?? []) };
    if (cmd.startsWith("ip -j -4 addr show")) {
      const addr_info = (m.addrs ?? []).map((a) => ({ local: a.split("/")[0], prefixlen: Number(a.split("/")[1]) }));
      return { stdout: JSON.stringify([{ addr_info }]) };
    }
    if (cmd === "sysctl -n net.ipv4.ip_forward") return { stdout: `${m.forwarding ?? "0"}\n` };
    if (cmd === "nft list ruleset") return m.nft === false ? { code: 1, stderr: "nft: not supported" } : {};
    if (cmd.startsWith("nft -j list table")) return m.nftTable ? { stdout: m.nftTable } : { code: 1, stderr: "Error: No such file or directory" };
    if (/^iptables -w (-t \S+ )?-S BANGER/.test(cmd)) return { code: 1, stderr: "iptables: No chain/target/match by that name." };
    return undefined;
  };
}

const cfg: HostNetConfig = { bridge: "banger0", subnet: "172.30.0.1/24", tapCount: 2, owner: { uid: 1000, gid: 1000 }, firewall: "nftables" };

/** The nft JSON of a complete table, as nft itself prints it, optionally with NAT elements. */
function nftJson(bridge: string, elems: unknown[] = []): string {
  const rules = nftBaseRules(bridge);
  const items: unknown[] = [
    { chain: { name: "forward", hook: "forward" } },
    { chain: { name: "postrouting", hook: "postrouting" } },
    { set: { name: "nat_guests", elem: elems } },
  ];
  for (const [chain, list] of Object.entries(rules)) for (const [, comment] of list) items.push({ rule: { chain, comment } });
  return JSON.stringify({ nftables: items });
}

const setUpHost: HostModel = {
  links: [
    { ifname: "banger0", kind: "bridge", up: true, alias: "banger ip_forward_was=0" },
    { ifname: "bgr0t0", kind: "tun", master: "banger0", up: true },
    { ifname: "bgr0t1", kind: "tun", master: "banger0", up: true },
  ],
  taps: [
    { ifname: "bgr0t0", user: 1000, group: 1000 },
    { ifname: "bgr0t1", user: 1000, group: 1000 },
  ],
  addrs: ["172.30.0.1/24"],
  forwarding: "1",
  nftTable: nftJson("banger0"),
};

describe("hostSetup", () => {
  test("fresh host, nftables: bridge, mark, address, up, forwarding, TAPs, one nft script", async () => {
    const r = new FakeHost(model({}));
    const actions = await hostSetup({ runner: r, sudo: false }, cfg);
    expect(r.mutations()).toEqual([
      "ip link add banger0 type bridge",
      "ip link set dev banger0 alias banger ip_forward_was=0",
      "ip addr add 172.30.0.1/24 dev banger0",
      "ip link set dev banger0 up",
      "sysctl -q -w net.ipv4.ip_forward=1",
      "ip tuntap add dev bgr0t0 mode tap user 1000 group 1000",
      "ip link set dev bgr0t0 master banger0 up",
      "ip tuntap add dev bgr0t1 mode tap user 1000 group 1000",
      "ip link set dev bgr0t1 master banger0 up",
      "nft -f -",
    ]);
    expect(r.stdin.at(-1)).toBe(nftBaseScript("banger0"));
    expect(actions).toHaveLength(10);
  });

  test("the nft script: own table, default drop for the bridge, masquerade only for the NAT set", () => {
    const s = nftBaseScript("banger0");
    expect(s).toContain("add table inet banger_banger0");
    expect(s).toContain('add rule inet banger_banger0 forward iifname "banger0" drop comment "banger:isolate"');
    expect(s).toContain('add rule inet banger_banger0 postrouting ip saddr @nat_guests oifname != "banger0" masquerade');
    expect(s.indexOf("banger:nat")).toBeLessThan(s.indexOf("banger:isolate"));
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
    const damaged = JSON.parse(nftJson("banger0")) as { nftables: any[] };
    damaged.nftables = damaged.nftables.filter((i) => i.rule?.comment !== "banger:isolate");
    const r = new FakeHost(model({ ...setUpHost, nftTable: JSON.stringify(damaged) }));
    expect(await hostSetup({ runner: r, sudo: false }, cfg)).toEqual(["repaired nftables table inet banger_banger0"]);
    expect(r.stdin.at(-1)).not.toContain("flush set");
  });

  test("iptables: own chains, comment-tagged rules, jumps at the top", async () => {
    const r = new FakeHost(model({ ...setUpHost, nftTable: null }));
    await hostSetup({ runner: r, sudo: false }, { ...cfg, firewall: "iptables" });
    expect(r.mutations()).toEqual([
      "iptables -w -N BANGER-FWD-banger0",
      "iptables -w -A BANGER-FWD-banger0 -o banger0 -m comment --comment banger -j ACCEPT",
      "iptables -w -A BANGER-FWD-banger0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment banger -j ACCEPT",
      "iptables -w -A BANGER-FWD-banger0 -m comment --comment banger -j DROP",
      "iptables -w -t nat -N BANGER-NAT-banger0",
      "iptables -w -I FORWARD 1 -i banger0 -m comment --comment banger -j BANGER-FWD-banger0",
      "iptables -w -t nat -I POSTROUTING 1 -m comment --comment banger -j BANGER-NAT-banger0",
    ]);
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
    const r = new FakeHost(model({}));
    expect(await hostTeardown({ runner: r, sudo: false }, cfg)).toEqual([]);
  });
});

describe("NAT per VM", () => {
  test("nftables: an element tagged with tap and ip; repeating is a no-op", async () => {
    const r = new FakeHost(model(setUpHost));
    await natAdd({ runner: r, sudo: false }, cfg, { guestIp: "172.30.0.5", tap: "bgr0t1" });
    expect(r.mutations()).toEqual(['nft add element inet banger_banger0 nat_guests { 172.30.0.5 comment "banger-nat tap=bgr0t1 ip=172.30.0.5" }']);
    const tagged = [{ elem: { val: "172.30.0.5", comment: "banger-nat tap=bgr0t1 ip=172.30.0.5" } }];
    const r2 = new FakeHost(model({ ...setUpHost, nftTable: nftJson("banger0", tagged) }));
    expect(await natAdd({ runner: r2, sudo: false }, cfg, { guestIp: "172.30.0.5", tap: "bgr0t1" })).toEqual([]);
    expect(await natRemove({ runner: r2, sudo: false }, cfg, { guestIp: "172.30.0.5" })).toEqual(["disabled NAT for 172.30.0.5"]);
    expect(r2.mutations()).toEqual(["nft delete element inet banger_banger0 nat_guests { 172.30.0.5 }"]);
  });

  test("removal when the rule or the whole table is gone is a clean no-op", async () => {
    for (const m of [setUpHost, {}]) {
      const r = new FakeHost(model(m));
      expect(await natRemove({ runner: r, sudo: false }, cfg, { guestIp: "172.30.0.5" })).toEqual([]);
      expect(r.mutations()).toEqual([]);
    }
  });

  test("adding without setup says to run host setup", async () => {
    const err = await natAdd({ runner: new FakeHost(model({})), sudo: false }, cfg, { guestIp: "172.30.0.5", tap: "bgr0t1" }).catch((e) => e);
    expect(err.code).toBe("failed_precondition");
    expect(err.hint).toContain("sudo banger host setup");
  });

  test("guest addresses outside the subnet are refused", async () => {
    const err = await natAdd({ runner: new FakeHost(model(setUpHost)), sudo: false }, cfg, { guestIp: "10.0.0.5", tap: "bgr0t1" }).catch((e) => e);
    expect(err.code).toBe("invalid_argument");
  });

  test("iptables: an accept in the forward chain and a masquerade, both tagged", async () => {
    const chains = (argv: string[]) => {
      const a = argv.join(" ");
      if (a === "iptables -w -t filter -S BANGER-FWD-banger0") return { stdout: "-N BANGER-FWD-banger0\n" };
      if (a === "iptables -w -t nat -S BANGER-NAT-banger0") return { stdout: "-N BANGER-NAT-banger0\n" };
      return model(setUpHost)(argv);
    };
    const r = new FakeHost(chains);
    await natAdd({ runner: r, sudo: false }, { ...cfg, firewall: "iptables" }, { guestIp: "172.30.0.5", tap: "bgr0t1" });
    expect(r.mutations()).toEqual([
      "iptables -w -I BANGER-FWD-banger0 1 -s 172.30.0.5/32 -m comment --comment banger-nat tap=bgr0t1 ip=172.30.0.5 -j ACCEPT",
      "iptables -w -t nat -A BANGER-NAT-banger0 -s 172.30.0.5/32 ! -o banger0 -m comment --comment banger-nat tap=bgr0t1 ip=172.30.0.5 -j MASQUERADE",
    ]);
  });
});

describe("status, detection, config helpers", () => {
  test("status of a set-up host is ready and lists NAT guests", async () => {
    const tagged = [{ elem: { val: "172.30.0.7", comment: "banger-nat tap=bgr0t0 ip=172.30.0.7" } }];
    const s = await hostStatus({ runner: new FakeHost(model({ ...setUpHost, nftTable: nftJson("banger0", tagged) })), sudo: false }, cfg);
    expect(s.ready).toBe(true);
    expect(s.taps.map((t) => t.name)).toEqual(["bgr0t0", "bgr0t1"]);
    expect(s.nat).toEqual([{ guestIp: "172.30.0.7", tap: "bgr0t0" }]);
  });

  test("status of a bare host names what is missing", async () => {
    const s = await hostStatus({ runner: new FakeHost(model({})), sudo: false }, cfg);
    expect(s).toMatchObject({ ready: false, rulesPresent: false, forwarding: false, tapsMissing: ["bgr0t0", "bgr0t1"] });
    expect(s.bridge.present).toBe(false);
  });

  test("detectFirewall prefers nft, falls back to iptables", async () => {
    expect(await detectFirewall({ runner: new FakeHost(model({})), sudo: false })).toBe("nftables");
    expect(await detectFirewall({ runner: new FakeHost(model({ nft: false })), sudo: false })).toBe("iptables");
  });

  test("TAP names and subnets", () => {
    expect(tapNames({ bridge: "banger0", tapCount: 3 })).toEqual(["bgr0t0", "bgr0t1", "bgr0t2"]);
    expect(tapNames({ bridge: "bgt1a2b", tapCount: 1 })).toEqual(["bgrbgt1a2bt0"]);
    expect(parseSubnet("172.30.0.1/24")).toEqual({ gateway: "172.30.0.1", prefix: 24, cidr: "172.30.0.1/24", network: "172.30.0.0/24" });
    expect(() => parseSubnet("172.30.0.0/24")).toThrow(/network/);
    expect(() => parseSubnet("banana")).toThrow(/subnet/);
  });

  test("systemd unit runs setup once at boot, after the distro firewall", () => {
    const text = systemdUnitText({ bridge: "banger0" }, { exec: ["/usr/local/bin/banger", "host", "setup"] });
    expect(text).toContain("ExecStart=/usr/local/bin/banger host setup");
    expect(text).toContain("Type=oneshot");
    expect(text).toMatch(/After=.*nftables\.service/);
    expect(text).toContain("WantedBy=multi-user.target");
  });

  test("systemd unit is written and enabled once, then left alone", async () => {
    const spec = { path: "/tmp/x/banger-host.service", exec: ["/bin/banger", "host", "setup"] };
    const text = systemdUnitText(cfg, spec);
    const r1 = new FakeHost((a) => (a[0] === "cat" ? { code: 1 } : a[0] === "systemctl" && a[1] === "is-enabled" ? { code: 1, stdout: "disabled" } : model(setUpHost)(a)));
    expect(await hostSetup({ runner: r1, sudo: false }, { ...cfg, systemdUnit: spec })).toEqual(["wrote /tmp/x/banger-host.service", "enabled banger-host.service"]);
    expect(r1.stdin[r1.calls.findIndex((c) => c[0] === "tee")]).toBe(text);
    const r2 = new FakeHost((a) => (a[0] === "cat" ? { stdout: text } : a[0] === "systemctl" ? { stdout: "enabled\n" } : model(setUpHost)(a)));
    expect(await hostSetup({ runner: r2, sudo: false }, { ...cfg, systemdUnit: spec })).toEqual([]);
  });
});
