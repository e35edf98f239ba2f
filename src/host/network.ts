import { BangerError } from "../errors.ts";
import { type FirewallKind, type HostNetConfig, type NatEntry, checkDnsPort, checkGuestIp, checkIfName, parseSubnet, tapNames } from "./network/config.ts";
import { detectFirewall, firewallFor } from "./network/firewall.ts";
import { ensureBridge, ensureForwarding, ensureTaps, poolTaps, readAddrs, readForwarding, readLinks, removeLinks, type TapInfo } from "./network/links.ts";
import type { NetDeps } from "./network/priv.ts";
import { removeLegacyIptables } from "./network/iptables.ts";
import { nftFirewall } from "./network/nft.ts";
import { ensureSystemdUnit, removeSystemdUnit } from "./network/systemd.ts";

export type { FirewallKind, HostNetConfig, NatEntry, SystemdUnitSpec } from "./network/config.ts";
export { parseSubnet, tapNames, tapPrefix } from "./network/config.ts";
export type { TapInfo } from "./network/links.ts";
export type { NetDeps } from "./network/priv.ts";
export { systemdUnitPath, systemdUnitText } from "./network/systemd.ts";
export { detectFirewall };

/** What `host status` shows. */
export interface HostStatus {
  bridge: { name: string; present: boolean; up: boolean; addresses: string[]; expected: string };
  taps: TapInfo[];
  /** Pool TAPs from the config that are missing, foreign-owned, detached or down. */
  tapsMissing: string[];
  firewall: FirewallKind;
  rulesPresent: boolean;
  nat: NatEntry[];
  forwarding: boolean;
  /** True when everything setup would create is in place. */
  ready: boolean;
}

function check(cfg: HostNetConfig): void {
  checkIfName(cfg.bridge);
  parseSubnet(cfg.subnet);
  tapNames(cfg);
  checkDnsPort(cfg.guestDnsPort);
}

/**
 * Creates or repairs the bridge, forwarding, TAP pool, firewall rules and (optionally) the
 * systemd unit. Idempotent: returns the actions taken, empty when all was in place.
 */
export async function hostSetup(deps: NetDeps, cfg: HostNetConfig): Promise<string[]> {
  check(cfg);
  const actions: string[] = [];
  // The bridge first: it records whether forwarding was on before banger turned it on.
  actions.push(...(await ensureBridge(deps, cfg, await readLinks(deps))));
  actions.push(...(await ensureForwarding(deps)));
  actions.push(...(await ensureTaps(deps, cfg, await readLinks(deps))));
  actions.push(...(await (await firewallFor(deps, cfg)).ensure()));
  if (cfg.systemdUnit) actions.push(...(await ensureSystemdUnit(deps, cfg, cfg.systemdUnit)));
  return actions;
}

/** Removes the bridge, the TAP pool, banger's rules for the bridge (both backends) and the unit; restores forwarding. */
export async function hostTeardown(deps: NetDeps, cfg: HostNetConfig): Promise<string[]> {
  checkIfName(cfg.bridge);
  const actions: string[] = [];
  if (cfg.systemdUnit) actions.push(...(await removeSystemdUnit(deps, cfg, cfg.systemdUnit)));
  actions.push(
    ...(await nftFirewall(deps, cfg)
      .remove()
      .catch((err) => ignoreMissingTool(err))),
  );
  // Chains an older banger wrote with iptables go too.
  actions.push(...(await removeLegacyIptables(deps, cfg).catch((err) => ignoreMissingTool(err))));
  actions.push(...(await removeLinks(deps, cfg, await readLinks(deps))));
  return actions;
}

/** A backend whose tool is not installed has nothing to remove. */
function ignoreMissingTool(err: unknown): string[] {
  if (err instanceof BangerError) throw err;
  if ((err as NodeJS.ErrnoException)?.code === "ENOENT" || /ENOENT|not found/i.test(String(err))) return [];
  throw err;
}

/** Reports what exists of the setup, without changing anything. */
export async function hostStatus(deps: NetDeps, cfg: HostNetConfig): Promise<HostStatus> {
  check(cfg);
  const subnet = parseSubnet(cfg.subnet);
  const state = await readLinks(deps);
  const link = state.links.get(cfg.bridge);
  const present = link?.kind === "bridge";
  const addresses = present ? await readAddrs(deps, cfg.bridge) : [];
  const taps = poolTaps(cfg, state);
  const tapsMissing = tapNames(cfg).filter((name) => {
    const t = taps.find((x) => x.name === name);
    return !t || t.master !== cfg.bridge || !t.up || t.uid !== cfg.owner.uid || t.gid !== cfg.owner.gid;
  });
  const fw = await firewallFor(deps, cfg);
  const rulesPresent = await fw.present();
  const forwarding = await readForwarding(deps);
  const expected = `${subnet.gateway}/${subnet.prefix}`;
  return {
    bridge: { name: cfg.bridge, present, up: !!link?.up, addresses, expected },
    taps,
    tapsMissing,
    firewall: fw.kind,
    rulesPresent,
    nat: rulesPresent ? await fw.natList() : [],
    forwarding,
    ready: present && !!link?.up && addresses.includes(expected) && tapsMissing.length === 0 && rulesPresent && forwarding,
  };
}

/** Lets one guest reach beyond the bridge (masqueraded); tagged with its IP and TAP. Idempotent. */
export async function natAdd(deps: NetDeps, cfg: HostNetConfig, vm: { guestIp: string; tap: string }): Promise<string[]> {
  checkGuestIp(parseSubnet(cfg.subnet), vm.guestIp);
  checkIfName(vm.tap, "TAP");
  return (await firewallFor(deps, cfg)).natAdd(vm.guestIp, vm.tap);
}

/** Withdraws a guest's NAT; a no-op when its rules (or the whole setup) are already gone. */
export async function natRemove(deps: NetDeps, cfg: HostNetConfig, vm: { guestIp: string; tap?: string }): Promise<string[]> {
  checkGuestIp(parseSubnet(cfg.subnet), vm.guestIp);
  return (await firewallFor(deps, cfg)).natRemove(vm.guestIp);
}

/** The pool TAPs present on the host, in index order, with owner and attachment. */
export async function tapList(deps: NetDeps, cfg: HostNetConfig): Promise<TapInfo[]> {
  checkIfName(cfg.bridge);
  return poolTaps(cfg, await readLinks(deps));
}
