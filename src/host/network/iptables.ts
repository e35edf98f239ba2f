import { BangerError } from "../../errors.ts";
import { type HostNetConfig, type NatEntry, iptablesChains, natComment, parseNatComment } from "./config.ts";
import type { Firewall } from "./firewall.ts";
import { type NetDeps, SETUP_HINT, priv } from "./priv.ts";

const TAG = ["-m", "comment", "--comment", "banger"];

/** The base rules of the bridge's forward chain, as `iptables -S` prints them (after `-A <chain> `). */
export function iptablesBaseRules(bridge: string): string[][] {
  return [
    ["-o", bridge, ...TAG, "-j", "ACCEPT"],
    ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", ...TAG, "-j", "ACCEPT"],
    // Guests without --nat must not reach beyond the bridge.
    [...TAG, "-j", "DROP"],
  ];
}

function fwdJump(bridge: string): string[] {
  return ["-i", bridge, ...TAG, "-j", iptablesChains(bridge).fwd];
}

function natJump(bridge: string): string[] {
  return [...TAG, "-j", iptablesChains(bridge).nat];
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

interface View {
  forward: string[];
  postrouting: string[];
  fwd: string[] | null;
  nat: string[] | null;
}

/** The iptables backend: per-bridge chains BANGER-FWD-<bridge> (filter) and BANGER-NAT-<bridge> (nat). */
export function iptablesFirewall(deps: NetDeps, cfg: HostNetConfig): Firewall {
  const { bridge } = cfg;
  const chains = iptablesChains(bridge);
  const ipt = (args: string[], allowFailure = false) => priv(deps, ["iptables", "-w", ...args], { allowFailure });
  const list = async (table: string, chain: string) => {
    const r = await ipt(["-t", table, "-S", chain], true);
    return r.code === 0 ? r.stdout.split("\n").filter((l) => l.startsWith("-A ")) : null;
  };
  const view = async (): Promise<View> => ({
    forward: (await list("filter", "FORWARD")) ?? [],
    postrouting: (await list("nat", "POSTROUTING")) ?? [],
    fwd: await list("filter", chains.fwd),
    nat: await list("nat", chains.nat),
  });
  const natEntries = (v: View): NatEntry[] =>
    (v.nat ?? []).map((l) => parseNatComment(l)).filter((e): e is NatEntry => e !== null);
  const baseOk = (v: View) =>
    v.fwd !== null &&
    JSON.stringify(v.fwd.filter((l) => !parseNatComment(l))) === JSON.stringify(iptablesBaseRules(bridge).map((r) => printed(chains.fwd, r)));
  const checks = (v: View) => ({
    fwdJump: v.forward.includes(printed("FORWARD", fwdJump(bridge))),
    natJump: v.postrouting.includes(printed("POSTROUTING", natJump(bridge))),
  });

  async function ensure(): Promise<string[]> {
    const v = await view();
    const actions: string[] = [];
    if (!baseOk(v)) {
      if (v.fwd === null) await ipt(["-N", chains.fwd]);
      else await ipt(["-F", chains.fwd]);
      for (const rule of iptablesBaseRules(bridge)) await ipt(["-A", chains.fwd, ...rule]);
      // Flushing dropped the per-VM accepts: put back those the NAT chain still lists.
      for (const e of natEntries(v)) await ipt(["-I", chains.fwd, "1", ...natFwdRule(e.guestIp, e.tap ?? "")]);
      actions.push(`${v.fwd === null ? "created" : "repaired"} iptables chain ${chains.fwd}`);
    }
    if (v.nat === null) {
      await ipt(["-t", "nat", "-N", chains.nat]);
      actions.push(`created iptables chain ${chains.nat}`);
    }
    const c = checks(v);
    if (!c.fwdJump) {
      await ipt(["-I", "FORWARD", "1", ...fwdJump(bridge)]);
      actions.push(`linked FORWARD to ${chains.fwd}`);
    }
    if (!c.natJump) {
      await ipt(["-t", "nat", "-I", "POSTROUTING", "1", ...natJump(bridge)]);
      actions.push(`linked POSTROUTING to ${chains.nat}`);
    }
    return actions;
  }

  async function remove(): Promise<string[]> {
    const v = await view();
    const actions: string[] = [];
    // Count the jumps: a crashed earlier run may have linked a chain twice.
    const fwdJumps = v.forward.filter((l) => l === printed("FORWARD", fwdJump(bridge))).length;
    for (let i = 0; i < fwdJumps; i++) await ipt(["-D", "FORWARD", ...fwdJump(bridge)]);
    if (fwdJumps) actions.push(`unlinked FORWARD from ${chains.fwd}`);
    const natJumps = v.postrouting.filter((l) => l === printed("POSTROUTING", natJump(bridge))).length;
    for (let i = 0; i < natJumps; i++) await ipt(["-t", "nat", "-D", "POSTROUTING", ...natJump(bridge)]);
    if (natJumps) actions.push(`unlinked POSTROUTING from ${chains.nat}`);
    for (const [table, chain, rules] of [["filter", chains.fwd, v.fwd], ["nat", chains.nat, v.nat]] as const) {
      if (rules === null) continue;
      await ipt(["-t", table, "-F", chain]);
      await ipt(["-t", table, "-X", chain]);
      actions.push(`removed iptables chain ${chain}`);
    }
    return actions;
  }

  async function natRemove(guestIp: string): Promise<string[]> {
    const v = await view();
    const actions: string[] = [];
    for (const [table, chain, lines] of [["filter", chains.fwd, v.fwd], ["nat", chains.nat, v.nat]] as const) {
      for (const e of (lines ?? []).map((l) => parseNatComment(l)).filter((x) => x?.guestIp === guestIp)) {
        const spec = table === "nat" ? natMasqRule(bridge, guestIp, e!.tap ?? "") : natFwdRule(guestIp, e!.tap ?? "");
        await ipt(["-t", table, "-D", chain, ...spec]);
        if (!actions.length) actions.push(`disabled NAT for ${guestIp}`);
      }
    }
    return actions;
  }

  return {
    kind: "iptables",
    ensure,
    remove,
    async present() {
      const v = await view();
      const c = checks(v);
      return baseOk(v) && v.nat !== null && c.fwdJump && c.natJump;
    },
    async natAdd(guestIp, tap) {
      const v = await view();
      if (v.fwd === null || v.nat === null) {
        throw new BangerError("failed_precondition", `NAT for ${guestIp} needs banger's iptables chains ${chains.fwd}/${chains.nat}, which are missing`, {
          hint: SETUP_HINT,
        });
      }
      const fwdHas = v.fwd.includes(printed(chains.fwd, natFwdRule(guestIp, tap)));
      const natHas = v.nat.includes(printed(chains.nat, natMasqRule(bridge, guestIp, tap)));
      if (fwdHas && natHas) return [];
      await natRemove(guestIp);
      await ipt(["-I", chains.fwd, "1", ...natFwdRule(guestIp, tap)]);
      await ipt(["-t", "nat", "-A", chains.nat, ...natMasqRule(bridge, guestIp, tap)]);
      return [`enabled NAT for ${guestIp} (${tap})`];
    },
    natRemove,
    async natList() {
      return natEntries(await view());
    },
  };
}
