import type { FirewallKind, HostNetConfig, NatEntry } from "./config.ts";
import { nftFirewall } from "./nft.ts";
import { BangerError } from "../../errors.ts";
import { type NetDeps, priv } from "./priv.ts";

/** A firewall backend: banger's base rules for one bridge plus per-VM NAT entries. */
export interface Firewall {
  kind: FirewallKind;
  /** Creates or repairs the base rules; returns what it did (empty when all was in place). */
  ensure(): Promise<string[]>;
  /** Removes everything this bridge's rules consist of. */
  remove(): Promise<string[]>;
  /** True when the base rules are all in place. */
  present(): Promise<boolean>;
  natAdd(guestIp: string, tap: string): Promise<string[]>;
  /** A no-op when the entry (or the whole setup) is already gone. */
  natRemove(guestIp: string): Promise<string[]>;
  natList(): Promise<NatEntry[]>;
}

/**
 * Why iptables is not enough: guest isolation needs per-TAP anti-spoofing in the bridge
 * family and per-VM verdict maps and timed sets, which nftables has and iptables (without
 * ebtables and ipset) does not.
 */
export const NFT_REQUIRED =
  "banger's guest isolation needs nftables: per-TAP anti-spoofing in the bridge family and per-VM egress sets have no iptables equivalent";

/** nftables when `nft list ruleset` works; banger no longer writes iptables rules. */
export async function detectFirewall(deps: NetDeps): Promise<FirewallKind> {
  if (await works(deps, ["nft", "list", "ruleset"])) return "nftables";
  throw new BangerError("not_available", `\`nft\` does not work on this host; ${NFT_REQUIRED}`, {
    hint: "Install nftables (`sudo apt-get install nftables`) and run `sudo banger host setup` again",
  });
}

/** True when a privileged probe exits 0; a missing binary is false, a refused sudo still throws. */
async function works(deps: NetDeps, argv: string[]): Promise<boolean> {
  try {
    return (await priv(deps, argv, { allowFailure: true })).code === 0;
  } catch (err) {
    if (err instanceof BangerError && err.code === "permission_denied") throw err;
    return false;
  }
}

/** The backend for a bridge: the configured kind, or the detected one. */
export async function firewallFor(deps: NetDeps, cfg: HostNetConfig): Promise<Firewall> {
  const kind = cfg.firewall ?? (await detectFirewall(deps));
  if (kind === "iptables") {
    throw new BangerError("not_available", `the iptables backend was dropped: ${NFT_REQUIRED}`, {
      hint: "Install nftables (`sudo apt-get install nftables`) and run `sudo banger host setup` again",
    });
  }
  return nftFirewall(deps, cfg);
}
