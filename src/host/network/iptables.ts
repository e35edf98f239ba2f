import { BangerError } from "../../errors.ts";
import { type HostNetConfig, type NatEntry, iptablesChains, natComment, parseNatComment, parseSubnet } from "./config.ts";
import type { Firewall } from "./firewall.ts";
import { type NetDeps, SETUP_HINT, priv } from "./priv.ts";

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

/** The chains and fixed rules for a bridge; per-VM NAT rules come and go beside them. */
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

function natFwdRule(ip: string, tap: string): string[] {
  return ["-s", `${ip}/32`, "-m", "comment", "--comment", natComment(ip, tap), "-j", "ACCEPT"];
}

function natMasqRule(bridge: string, ip: string, tap: string): string[] {
  return ["-s", `${ip}/32`, "!", "-o", bridge, "-m", "comment", "--comment", natComment(ip, tap), "-j", "MASQUERADE"];
}

/** How `iptables -S` prints a rule spec (comments with spaces come back quoted). */
function printed(chain: string, spec: string[]): string {
  return ["-A", chain, ...spec.map((a) => (/\s/.test(a) ? `"${a}"` : a))].join(" ");
}

/** The iptables backend: per-bridge chains BANGER-FWD/NAT/DNS-<bridge>, every rule comment-tagged. */
export function iptablesFirewall(deps: NetDeps, cfg: HostNetConfig): Firewall {
  const { bridge } = cfg;
  const layout = iptablesLayout(cfg);
  const [fwd, nat] = layout as [OwnChain, OwnChain, OwnChain];
  const ipt = (args: string[], allowFailure = false) => priv(deps, ["iptables", "-w", ...args], { allowFailure });
  const list = async (table: string, chain: string) => {
    const r = await ipt(["-t", table, "-S", chain], true);
    return r.code === 0 ? r.stdout.split("\n").filter((l) => l.startsWith("-A ")) : null;
  };
  const fixed = (lines: string[]) => lines.filter((l) => !parseNatComment(l));
  const baseOk = (ch: OwnChain, lines: string[] | null) =>
    lines !== null && JSON.stringify(fixed(lines)) === JSON.stringify(ch.base.map((r) => printed(ch.name, r)));
  const jumps = async (ch: OwnChain) => ((await list(ch.table, ch.hook)) ?? []).filter((l) => l === printed(ch.hook, ch.jump)).length;
  const natEntries = async (): Promise<NatEntry[]> =>
    ((await list("nat", nat.name)) ?? []).map((l) => parseNatComment(l)).filter((e): e is NatEntry => e !== null);

  async function ensureChain(ch: OwnChain): Promise<string[]> {
    const lines = await list(ch.table, ch.name);
    const actions: string[] = [];
    if (!baseOk(ch, lines)) {
      const entries = ch === fwd || ch === nat ? await natEntries() : [];
      await ipt(["-t", ch.table, lines === null ? "-N" : "-F", ch.name]);
      for (const rule of ch.base) await ipt(["-t", ch.table, "-A", ch.name, ...rule]);
      // Flushing dropped the per-VM rules: put back those the NAT chain listed.
      for (const e of entries) {
        if (ch === fwd) await ipt(["-I", fwd.name, "1", ...natFwdRule(e.guestIp, e.tap ?? "")]);
        else await ipt(["-t", "nat", "-A", nat.name, ...natMasqRule(bridge, e.guestIp, e.tap ?? "")]);
      }
      actions.push(`${lines === null ? "created" : "repaired"} iptables chain ${ch.name}`);
    }
    if ((await jumps(ch)) === 0) {
      await ipt(["-t", ch.table, "-I", ch.hook, "1", ...ch.jump]);
      actions.push(`linked ${ch.hook} to ${ch.name}`);
    }
    return actions;
  }

  async function removeChain(ch: OwnChain): Promise<string[]> {
    const actions: string[] = [];
    // Count the jumps: a crashed earlier run may have linked a chain twice.
    const n = await jumps(ch);
    for (let i = 0; i < n; i++) await ipt(["-t", ch.table, "-D", ch.hook, ...ch.jump]);
    if (n) actions.push(`unlinked ${ch.hook} from ${ch.name}`);
    if ((await list(ch.table, ch.name)) !== null) {
      await ipt(["-t", ch.table, "-F", ch.name]);
      await ipt(["-t", ch.table, "-X", ch.name]);
      actions.push(`removed iptables chain ${ch.name}`);
    }
    return actions;
  }

  async function natRemove(guestIp: string): Promise<string[]> {
    const actions: string[] = [];
    for (const ch of [fwd, nat]) {
      for (const e of ((await list(ch.table, ch.name)) ?? []).map((l) => parseNatComment(l)).filter((x) => x?.guestIp === guestIp)) {
        const spec = ch === nat ? natMasqRule(bridge, guestIp, e!.tap ?? "") : natFwdRule(guestIp, e!.tap ?? "");
        await ipt(["-t", ch.table, "-D", ch.name, ...spec]);
        if (!actions.length) actions.push(`disabled NAT for ${guestIp}`);
      }
    }
    return actions;
  }

  return {
    kind: "iptables",
    async ensure() {
      const actions: string[] = [];
      for (const ch of layout) actions.push(...(await ensureChain(ch)));
      return actions;
    },
    async remove() {
      const actions: string[] = [];
      for (const ch of layout) actions.push(...(await removeChain(ch)));
      return actions;
    },
    async present() {
      for (const ch of layout) if (!baseOk(ch, await list(ch.table, ch.name)) || (await jumps(ch)) === 0) return false;
      return true;
    },
    async natAdd(guestIp, tap) {
      const [f, n] = [await list(fwd.table, fwd.name), await list(nat.table, nat.name)];
      if (f === null || n === null) {
        throw new BangerError("failed_precondition", `NAT for ${guestIp} needs banger's iptables chains ${fwd.name}/${nat.name}, which are missing`, {
          hint: SETUP_HINT,
        });
      }
      if (f.includes(printed(fwd.name, natFwdRule(guestIp, tap))) && n.includes(printed(nat.name, natMasqRule(bridge, guestIp, tap)))) return [];
      await natRemove(guestIp);
      await ipt(["-I", fwd.name, "1", ...natFwdRule(guestIp, tap)]);
      await ipt(["-t", "nat", "-A", nat.name, ...natMasqRule(bridge, guestIp, tap)]);
      return [`enabled NAT for ${guestIp} (${tap})`];
    },
    natRemove,
    natList: natEntries,
  };
}
