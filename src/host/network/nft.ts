import { BangerError } from "../../errors.ts";
import { type HostNetConfig, type NatEntry, natComment, nftTable, parseNatComment, parseSubnet } from "./config.ts";
import type { Firewall } from "./firewall.ts";
import { type NetDeps, SETUP_HINT, priv } from "./priv.ts";

const SET = "nat_guests";

type BaseCfg = Pick<HostNetConfig, "bridge" | "subnet" | "guestDnsPort">;
type Chain = "forward" | "postrouting" | "prerouting";

/** The base rules, in order, per chain; each carries a comment so status and repair can recognise it. */
export function nftBaseRules(cfg: BaseCfg): Record<Chain, Array<[string, string]>> {
  const br = JSON.stringify(cfg.bridge);
  const gw = parseSubnet(cfg.subnet).gateway;
  const dns = (proto: string): [string, string] => [`iifname ${br} ip daddr ${gw} ${proto} dport 53 redirect to :${cfg.guestDnsPort}`, `banger:dns-${proto}`];
  return {
    // Guests ask the gateway's port 53; an unprivileged daemon answers on a high port.
    prerouting: cfg.guestDnsPort ? [dns("udp"), dns("tcp")] : [],
    forward: [
      [`iifname ${br} oifname ${br} accept`, "banger:intra"],
      [`iifname ${br} ct state established,related accept`, "banger:replies"],
      [`iifname ${br} ip saddr @${SET} accept`, "banger:nat"],
      // Guests without --nat must not reach beyond the bridge.
      [`iifname ${br} drop`, "banger:isolate"],
    ],
    postrouting: [[`ip saddr @${SET} oifname != ${br} masquerade`, "banger:masq"]],
  };
}

/**
 * One atomic nft script that creates or repairs the table. `add` of an existing table,
 * chain or set is a no-op, the chains are flushed and refilled, and the set (per-VM NAT
 * entries) keeps its elements.
 */
export function nftBaseScript(cfg: BaseCfg): string {
  const t = `inet ${nftTable(cfg.bridge)}`;
  const rules = nftBaseRules(cfg);
  const lines = [
    `add table ${t}`,
    `add chain ${t} forward { type filter hook forward priority filter; policy accept; }`,
    `add chain ${t} postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
    `add chain ${t} prerouting { type nat hook prerouting priority dstnat; policy accept; }`,
    `add set ${t} ${SET} { type ipv4_addr; }`,
    `flush chain ${t} forward`,
    `flush chain ${t} postrouting`,
    `flush chain ${t} prerouting`,
  ];
  for (const [chain, list] of Object.entries(rules)) {
    for (const [rule, comment] of list) lines.push(`add rule ${t} ${chain} ${rule} comment "${comment}"`);
  }
  return `${lines.join("\n")}\n`;
}

interface TableView {
  chains: Map<string, string | null>;
  comments: Map<string, string[]>;
  hasSet: boolean;
  nat: NatEntry[];
}

/** Parses `nft -j list table` output into what status and repair compare. */
export function parseNftTable(json: string): TableView {
  const items = (JSON.parse(json).nftables ?? []) as any[];
  const view: TableView = { chains: new Map(), comments: new Map(), hasSet: false, nat: [] };
  for (const it of items) {
    if (it.chain) view.chains.set(it.chain.name, it.chain.hook ?? null);
    if (it.rule) view.comments.set(it.rule.chain, [...(view.comments.get(it.rule.chain) ?? []), it.rule.comment ?? ""]);
    if (it.set?.name === SET) {
      view.hasSet = true;
      for (const e of it.set.elem ?? []) {
        const ip = typeof e === "string" ? e : e?.elem?.val;
        if (typeof ip !== "string") continue;
        view.nat.push({ guestIp: ip, tap: (e?.elem?.comment && parseNatComment(e.elem.comment)?.tap) ?? null });
      }
    }
  }
  return view;
}

/** The nftables backend: table `inet banger_<bridge>` with a forward filter, a masquerade chain and a NAT set. */
export function nftFirewall(deps: NetDeps, cfg: HostNetConfig): Firewall {
  const table = nftTable(cfg.bridge);
  const view = async (): Promise<TableView | null> => {
    const r = await priv(deps, ["nft", "-j", "list", "table", "inet", table], { allowFailure: true });
    return r.code === 0 ? parseNftTable(r.stdout) : null;
  };
  const complete = (v: TableView | null): boolean => {
    if (!v?.hasSet) return false;
    const want = nftBaseRules(cfg);
    return (Object.keys(want) as Array<keyof typeof want>).every(
      (chain) => v.chains.get(chain) === chain && JSON.stringify(v.comments.get(chain) ?? []) === JSON.stringify(want[chain].map(([, c]) => c)),
    );
  };
  return {
    kind: "nftables",
    async ensure() {
      const v = await view();
      if (complete(v)) return [];
      await priv(deps, ["nft", "-f", "-"], { stdin: nftBaseScript(cfg) });
      return [v ? `repaired nftables table inet ${table}` : `created nftables table inet ${table}`];
    },
    async remove() {
      if (!(await view())) return [];
      await priv(deps, ["nft", "delete", "table", "inet", table]);
      return [`removed nftables table inet ${table}`];
    },
    async present() {
      return complete(await view());
    },
    async natAdd(guestIp, tap) {
      const v = await view();
      if (!v?.hasSet) {
        throw new BangerError("failed_precondition", `NAT for ${guestIp} needs banger's nftables table inet ${table}, which is missing`, {
          hint: SETUP_HINT,
        });
      }
      if (v.nat.some((e) => e.guestIp === guestIp && e.tap === tap)) return [];
      // Replace an entry left with another tap so the tag always names the current one.
      if (v.nat.some((e) => e.guestIp === guestIp)) await priv(deps, ["nft", `delete element inet ${table} ${SET} { ${guestIp} }`]);
      await priv(deps, ["nft", `add element inet ${table} ${SET} { ${guestIp} comment "${natComment(guestIp, tap)}" }`]);
      return [`enabled NAT for ${guestIp} (${tap})`];
    },
    async natRemove(guestIp) {
      const v = await view();
      if (!v?.nat.some((e) => e.guestIp === guestIp)) return [];
      await priv(deps, ["nft", `delete element inet ${table} ${SET} { ${guestIp} }`]);
      return [`disabled NAT for ${guestIp}`];
    },
    async natList() {
      return (await view())?.nat ?? [];
    },
  };
}
