import { BangerError } from "../../errors.ts";
import { type HostNetConfig, type NatEntry, natComment, nftTable, parseNatComment, parseSubnet, tapPrefix } from "./config.ts";
import type { Firewall } from "./firewall.ts";
import { type NetDeps, SETUP_HINT, priv } from "./priv.ts";

export const NAT_SET = "nat_guests";

type BaseCfg = Pick<HostNetConfig, "bridge" | "subnet" | "guestDnsPort" | "tapPrefix">;
type Family = "inet" | "bridge";

/** One base chain: its table family, hook declaration and ordered [rule, comment] pairs. */
export interface BaseChain {
  family: Family;
  name: string;
  hook: string;
  decl: string;
  rules: Array<[string, string]>;
}

/**
 * The base rules of the two tables. `inet banger_<bridge>`: from guests to the host only DNS
 * to the gateway and replies; between guests (routed, or bridged under br_netfilter) only
 * group peers; from outside towards guests only replies; egress per VM through the `egress`
 * verdict map (filled per VM), NAT guests through the `nat_guests` set. `bridge
 * banger_<bridge>`: every frame from a port goes through that port's chain (its VM's MAC and
 * address only, IPv4 and ARP only) or is dropped; port to port only between group peers.
 */
export function nftBaseChains(cfg: BaseCfg): BaseChain[] {
  return [...inetFilterChains(cfg), ...inetNatChains(cfg), ...bridgeChains(cfg)];
}

/** `inet` input and forward: what guests may reach on the host, each other and beyond. */
function inetFilterChains(cfg: BaseCfg): BaseChain[] {
  const br = JSON.stringify(cfg.bridge);
  const gw = parseSubnet(cfg.subnet).gateway;
  const dnsPorts = cfg.guestDnsPort && cfg.guestDnsPort !== 53 ? `{ 53, ${cfg.guestDnsPort} }` : "53";
  return [
    {
      family: "inet",
      name: "input",
      hook: "input",
      decl: "type filter hook input priority filter; policy accept;",
      rules: [
        [`iifname ${br} ct state established,related accept`, "banger:host-replies"],
        [`iifname ${br} ip daddr ${gw} meta l4proto { tcp, udp } th dport ${dnsPorts} accept`, "banger:host-dns"],
        // Guests reach no other host service, on any of the host's addresses.
        [`iifname ${br} drop`, "banger:host-deny"],
      ],
    },
    {
      family: "inet",
      name: "forward",
      hook: "forward",
      decl: "type filter hook forward priority filter; policy accept;",
      rules: [
        [`iifname ${br} oifname ${br} ip saddr . ip daddr @peer_ips accept`, "banger:peers"],
        [`iifname ${br} oifname ${br} drop`, "banger:intra"],
        [`iifname ${br} ct state established,related accept`, "banger:replies"],
        [`oifname ${br} ct state established,related accept`, "banger:inbound-replies"],
        [`oifname ${br} drop`, "banger:inbound"],
        [`iifname ${br} ip saddr @${NAT_SET} accept`, "banger:nat"],
        [`iifname ${br} ip saddr vmap @egress`, "banger:egress"],
        // Guests without a policy that allows it must not reach beyond the bridge.
        [`iifname ${br} drop`, "banger:isolate"],
      ],
    },
  ];
}

/** `inet` postrouting and prerouting: masquerade out of the subnet, guest DNS to the daemon's port. */
function inetNatChains(cfg: BaseCfg): BaseChain[] {
  const br = JSON.stringify(cfg.bridge);
  const subnet = parseSubnet(cfg.subnet);
  const gw = subnet.gateway;
  const dns = (proto: string): [string, string] => [`iifname ${br} ip daddr ${gw} ${proto} dport 53 redirect to :${cfg.guestDnsPort}`, `banger:dns-${proto}`];
  return [
    {
      family: "inet",
      name: "postrouting",
      hook: "postrouting",
      decl: "type nat hook postrouting priority srcnat; policy accept;",
      rules: [[`ip saddr ${subnet.network} oifname != ${br} masquerade`, "banger:masq"]],
    },
    {
      family: "inet",
      name: "prerouting",
      hook: "prerouting",
      decl: "type nat hook prerouting priority dstnat; policy accept;",
      // Guests ask the gateway's port 53; an unprivileged daemon answers on a high port.
      rules: cfg.guestDnsPort ? [dns("udp"), dns("tcp")] : [],
    },
  ];
}

/** `bridge` prerouting and forward: each port's own chain, port to port only between group peers. */
function bridgeChains(cfg: BaseCfg): BaseChain[] {
  const pool = JSON.stringify(`${tapPrefix(cfg)}*`);
  return [
    {
      family: "bridge",
      name: "guest_in",
      hook: "prerouting",
      decl: "type filter hook prerouting priority filter; policy accept;",
      // The bridge family's hooks see every bridge on the host, so each rule names this bridge's
      // ports: those with a VM (the `ports` map, `vm_ports` set) and the pool's TAP names.
      rules: [
        ["iifname vmap @ports", "banger:port"],
        // A pool TAP without a running VM sends nothing.
        [`iifname ${pool} drop`, "banger:no-port"],
      ],
    },
    {
      family: "bridge",
      name: "guest_fwd",
      hook: "forward",
      decl: "type filter hook forward priority filter; policy accept;",
      rules: [
        ["iifname . oifname @peers accept", "banger:peers"],
        ["iifname @vm_ports drop", "banger:intra"],
        [`iifname ${pool} drop`, "banger:intra-pool"],
      ],
    },
  ];
}

/** The sets and maps each table holds (per-VM data: kept across repairs). */
function nftSets(family: Family): string[] {
  if (family === "bridge") return ["map ports { type ifname : verdict; }", "set vm_ports { type ifname; }", "set peers { type ifname . ifname; }"];
  return [`set ${NAT_SET} { type ipv4_addr; }`, "set peer_ips { type ipv4_addr . ipv4_addr; }", "map egress { type ipv4_addr : verdict; }"];
}

/**
 * One atomic nft script that creates or repairs both tables. `add` of an existing table,
 * chain, set or map is a no-op; the base chains are flushed and refilled, while sets, maps
 * and per-VM chains keep what they hold.
 */
export function nftBaseScript(cfg: BaseCfg): string {
  const table = nftTable(cfg.bridge);
  const chains = nftBaseChains(cfg);
  const lines: string[] = [];
  for (const family of ["inet", "bridge"] as const) {
    const t = `${family} ${table}`;
    lines.push(`add table ${t}`);
    for (const s of nftSets(family)) lines.push(`add ${s.replace(/^(set|map) (\S+)/, `$1 ${t} $2`)}`);
    for (const c of chains.filter((c) => c.family === family)) lines.push(`add chain ${t} ${c.name} { ${c.decl} }`, `flush chain ${t} ${c.name}`);
    for (const c of chains.filter((c) => c.family === family)) {
      for (const [rule, comment] of c.rules) lines.push(`add rule ${t} ${c.name} ${rule} comment "${comment}"`);
    }
  }
  return `${lines.join("\n")}\n`;
}

/** What status and repair compare: per chain its hook and rule comments; the sets present; NAT entries. */
export interface TableView {
  chains: Map<string, string | null>;
  comments: Map<string, string[]>;
  sets: Set<string>;
  nat: NatEntry[];
}

/** Parses `nft -j list table` output (of either family) into a view, merged into `into`. */
export function parseNftTable(json: string, into?: TableView): TableView {
  const items = (JSON.parse(json).nftables ?? []) as any[];
  const view: TableView = into ?? { chains: new Map(), comments: new Map(), sets: new Set(), nat: [] };
  for (const it of items) {
    if (it.chain) view.chains.set(`${it.chain.family ?? ""}:${it.chain.name}`, it.chain.hook ?? null);
    if (it.rule) {
      const key = `${it.rule.family ?? ""}:${it.rule.chain}`;
      view.comments.set(key, [...(view.comments.get(key) ?? []), it.rule.comment ?? ""]);
    }
    const set = it.set ?? it.map;
    if (set) view.sets.add(`${set.family ?? ""}:${set.name}`);
    if (it.set?.name === NAT_SET) {
      for (const e of it.set.elem ?? []) {
        const ip = typeof e === "string" ? e : e?.elem?.val;
        if (typeof ip !== "string") continue;
        view.nat.push({ guestIp: ip, tap: (e?.elem?.comment && parseNatComment(e.elem.comment)?.tap) ?? null });
      }
    }
  }
  return view;
}

/** True when every base chain, set and map is in place with exactly banger's rules. */
function complete(cfg: BaseCfg, v: TableView | null): boolean {
  if (!v) return false;
  const sets = (["inet", "bridge"] as const).flatMap((f) => nftSets(f).map((s) => `${f}:${s.split(" ")[1]}`));
  if (!sets.every((s) => v.sets.has(s))) return false;
  return nftBaseChains(cfg).every((c) => {
    const key = `${c.family}:${c.name}`;
    return v.chains.get(key) === c.hook && JSON.stringify(v.comments.get(key) ?? []) === JSON.stringify(c.rules.map(([, comment]) => comment));
  });
}

/** The nftables backend: tables `inet` and `bridge` `banger_<bridge>`; per-VM rules in nft-vm.ts. */
export function nftFirewall(deps: NetDeps, cfg: HostNetConfig): Firewall {
  const table = nftTable(cfg.bridge);
  const view = async (): Promise<TableView | null> => {
    let v: TableView | null = null;
    for (const family of ["inet", "bridge"] as const) {
      const r = await priv(deps, ["nft", "-j", "list", "table", family, table], { allowFailure: true });
      if (r.code === 0) v = parseNftTable(r.stdout, v ?? undefined);
    }
    return v;
  };
  const needTable = (what: string) =>
    new BangerError("failed_precondition", `${what} needs banger's nftables table inet ${table}, which is missing`, { hint: SETUP_HINT });
  return {
    kind: "nftables",
    async ensure() {
      const v = await view();
      if (complete(cfg, v)) return [];
      await priv(deps, ["nft", "-f", "-"], { stdin: nftBaseScript(cfg) });
      return [v ? `repaired nftables tables ${table}` : `created nftables tables inet and bridge ${table}`];
    },
    async remove() {
      const actions: string[] = [];
      for (const family of ["inet", "bridge"] as const) {
        const r = await priv(deps, ["nft", "delete", "table", family, table], { allowFailure: true });
        if (r.code === 0) actions.push(`removed nftables table ${family} ${table}`);
      }
      return actions;
    },
    async present() {
      return complete(cfg, await view());
    },
    async natAdd(guestIp, tap) {
      const v = await view();
      if (!v?.sets.has(`inet:${NAT_SET}`)) throw needTable(`NAT for ${guestIp}`);
      if (v.nat.some((e) => e.guestIp === guestIp && e.tap === tap)) return [];
      // Replace an entry left with another tap so the tag always names the current one.
      if (v.nat.some((e) => e.guestIp === guestIp)) await priv(deps, ["nft", `delete element inet ${table} ${NAT_SET} { ${guestIp} }`]);
      await priv(deps, ["nft", `add element inet ${table} ${NAT_SET} { ${guestIp} comment "${natComment(guestIp, tap)}" }`]);
      return [`enabled NAT for ${guestIp} (${tap})`];
    },
    async natRemove(guestIp) {
      const v = await view();
      if (!v?.nat.some((e) => e.guestIp === guestIp)) return [];
      await priv(deps, ["nft", `delete element inet ${table} ${NAT_SET} { ${guestIp} }`]);
      return [`disabled NAT for ${guestIp}`];
    },
    async natList() {
      return (await view())?.nat ?? [];
    },
  };
}
