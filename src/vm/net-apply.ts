import { BangerError } from "../errors.ts";
import type { Config } from "../config.ts";
import type { VmRow } from "../store/vms.ts";
import type { VmServiceDeps } from "./deps.ts";
import type { VmSetInput } from "./model.ts";
import { checkGroup, formatNetPolicy, type NetPolicy, NET_POLICY_HINT, parseNetPolicy, policyFromRow } from "./net-policy.ts";

/** One VM's identity and policy, as the firewall needs them. */
export interface VmNet {
  id: string;
  ip: string;
  mac: string;
  tap: string;
  policy: NetPolicy;
}

/** A running VM's group membership (guests reach each other only within one group). */
export interface GroupMember {
  ip: string;
  tap: string;
  group: string;
}

/** The policy text a create asks for: --net, else --nat, else the config default. */
export function createPolicy(p: { net?: string; nat?: boolean }, config: Pick<Config, "net" | "nat">): string {
  if (p.net !== undefined && p.nat && parseNetPolicy(p.net).mode !== "nat") {
    throw new BangerError("invalid_argument", `--nat and --net ${p.net} contradict each other`, { hint: "Pass one of them (--nat is --net nat)." });
  }
  const text = p.net ?? (p.nat ? "nat" : config.net || (config.nat ? "nat" : "none"));
  return formatNetPolicy(parseNetPolicy(text));
}

export function vmNetOf(vm: VmRow): VmNet {
  return { id: vm.id, ip: vm.ip, mac: vm.mac, tap: vm.tap, policy: policyFromRow(vm) };
}

/** Puts a starting (or running) VM's anti-spoofing, egress and group rules in place. */
export async function applyNet(deps: VmServiceDeps, vm: VmRow): Promise<void> {
  // Recorded first: a daemon killed while the rules go in leaves a row that says to withdraw them.
  const row = deps.vms.get(vm.id) ?? vm;
  deps.vms.update(vm.id, { teardown: { ...row.teardown, tap: vm.tap, netIp: vm.ip } });
  await deps.network.applyVm(vmNetOf(vm));
  await syncGroups(deps);
}

/** Withdraws a VM's rules (a no-op when they are gone); the caller clears the teardown record. */
export async function releaseNet(deps: VmServiceDeps, vm: VmRow): Promise<void> {
  const ip = vm.teardown.netIp ?? vm.teardown.natIp;
  if (!ip) return;
  await deps.network.removeVm({ id: vm.id, ip, tap: vm.teardown.tap ?? vm.tap });
  deps.vms.update(vm.id, { teardown: { ...vm.teardown, netIp: undefined, natIp: undefined } });
  await syncGroups(deps);
}

/** Rewrites who may reach whom from the VMs whose rules are in place. */
export async function syncGroups(deps: VmServiceDeps): Promise<void> {
  const members = deps.vms
    .list()
    .filter((v) => v.teardown.netIp && v.net_group)
    .map((v) => ({ ip: v.ip, tap: v.teardown.tap ?? v.tap, group: v.net_group }));
  await deps.network.setGroups(members);
}

/** `vm set --net/--nat/--group`: stored at once, and applied at once when the VM is running. */
export async function setNet(deps: VmServiceDeps, vm: VmRow, p: Pick<VmSetInput, "net" | "nat" | "group">): Promise<string[]> {
  const notes: string[] = [];
  if (p.net !== undefined && p.nat !== undefined)
    throw new BangerError("invalid_argument", "pass either --net or --nat/--no-nat, not both", { hint: NET_POLICY_HINT });
  const text = p.net !== undefined ? formatNetPolicy(parseNetPolicy(p.net)) : p.nat === undefined ? undefined : p.nat ? "nat" : "none";
  const group = p.group === undefined ? undefined : checkGroup(p.group.trim().toLowerCase());
  const net = text !== undefined && text !== vm.net ? text : undefined;
  const net_group = group !== undefined && group !== vm.net_group ? group : undefined;
  if (net === undefined && net_group === undefined) return notes;
  deps.vms.update(vm.id, { ...(net !== undefined ? { net, nat: net === "nat" } : {}), ...(net_group !== undefined ? { net_group } : {}) });
  const live = deps.vms.get(vm.id)!;
  if (live.teardown.netIp || live.teardown.natIp) await applyNet(deps, live);
  if (net !== undefined) notes.push(`net ${net}`);
  if (net_group !== undefined) notes.push(net_group ? `group ${net_group}` : "no group");
  return notes;
}
