import { type HostNetConfig, iptablesChains, parseSubnet } from "./config.ts";
import { type NetDeps, priv } from "./priv.ts";

const TAG = ["-m", "comment", "--comment", "banger"];

/** One chain banger owns: where it lives, the built-in chain that jumps to it, its fixed rules. */
interface OwnChain {
  table: "filter" | "nat";
  name: string;
  hook: "FORWARD" | "POSTROUTING" | "PREROUTING";
  jump: string[];
  /** Rule specs as `iptables -S` prints them after `-A <chain>`. */
  base: string[][];
}

/** The chains and fixed rules older banger versions made for a bridge (what removal looks for). */
export function iptablesLayout(cfg: Pick<HostNetConfig, "bridge" | "subnet" | "guestDnsPort">): OwnChain[] {
  const { bridge } = cfg;
  const c = iptablesChains(bridge);
  const gw = `${parseSubnet(cfg.subnet).gateway}/32`;
  const dns = (proto: string) => ["-d", gw, "-p", proto, "-m", proto, "--dport", "53", ...TAG, "-j", "REDIRECT", "--to-ports", String(cfg.guestDnsPort)];
  return [
    {
      table: "filter",
      name: c.fwd,
      hook: "FORWARD",
      jump: ["-i", bridge, ...TAG, "-j", c.fwd],
      base: [
        ["-o", bridge, ...TAG, "-j", "ACCEPT"],
        ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", ...TAG, "-j", "ACCEPT"],
        // Guests without --nat must not reach beyond the bridge.
        [...TAG, "-j", "DROP"],
      ],
    },
    { table: "nat", name: c.nat, hook: "POSTROUTING", jump: [...TAG, "-j", c.nat], base: [] },
    {
      table: "nat",
      name: c.dns,
      hook: "PREROUTING",
      jump: ["-i", bridge, ...TAG, "-j", c.dns],
      base: cfg.guestDnsPort ? [dns("udp"), dns("tcp")] : [],
    },
  ];
}

/** How `iptables -S` prints a rule spec (comments with spaces come back quoted). */
function printed(chain: string, spec: string[]): string {
  return ["-A", chain, ...spec.map((a) => (/\s/.test(a) ? `"${a}"` : a))].join(" ");
}

/**
 * Removes the chains and jumps older banger versions wrote with iptables (the backend itself
 * was dropped: see NFT_REQUIRED in firewall.ts). A no-op when none are there.
 */
export async function removeLegacyIptables(deps: NetDeps, cfg: HostNetConfig): Promise<string[]> {
  const ipt = (args: string[], allowFailure = false) => priv(deps, ["iptables", "-w", ...args], { allowFailure });
  const list = async (table: string, chain: string) => {
    const r = await ipt(["-t", table, "-S", chain], true);
    return r.code === 0 ? r.stdout.split("\n").filter((l) => l.startsWith("-A ")) : null;
  };
  const jumps = async (ch: OwnChain) => ((await list(ch.table, ch.hook)) ?? []).filter((l) => l === printed(ch.hook, ch.jump)).length;
  const actions: string[] = [];
  for (const ch of iptablesLayout(cfg)) {
    // Count the jumps: a crashed earlier run may have linked a chain twice.
    const n = await jumps(ch);
    for (let i = 0; i < n; i++) await ipt(["-t", ch.table, "-D", ch.hook, ...ch.jump]);
    if (n) actions.push(`unlinked ${ch.hook} from ${ch.name}`);
    if ((await list(ch.table, ch.name)) !== null) {
      await ipt(["-t", ch.table, "-F", ch.name]);
      await ipt(["-t", ch.table, "-X", ch.name]);
      actions.push(`removed iptables chain ${ch.name}`);
    }
  }
  return actions;
}
