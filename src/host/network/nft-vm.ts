import type { NetPolicy } from "../../vm/net-policy.ts";
import { policyCidrs } from "../../vm/net-policy.ts";
import { natComment, nftTable } from "./config.ts";
import { NAT_SET } from "./nft.ts";

// Per-VM rules as atomic nft scripts. Every name is derived from the VM's address or TAP, so a
// script can first `add` what it then deletes or replaces: each one is idempotent and never
// needs to read the ruleset first.

/** What the firewall needs of one VM. */
export interface FirewallVm {
  ip: string;
  mac: string;
  tap: string;
  policy: NetPolicy;
}

/** Chain and set names for a VM's egress (by address) and its port (by TAP). */
export function vmNames(ip: string, tap: string) {
  const ipPart = ip.replace(/\./g, "_");
  const tapPart = tap.replace(/[^A-Za-z0-9]/g, (c) => `_${c.charCodeAt(0).toString(16)}`);
  return { egress: `egress_${ipPart}`, resolved: `resolved_${ipPart}`, port: `port_${tapPart}` };
}

/** Egress rules of a policy, inside the VM's chain (the base chain drops what they do not accept). */
function egressRules(ip: string, policy: NetPolicy, resolvedSet: string): string[] {
  if (policy.mode !== "allow") return [];
  const rules = [`ip daddr @${resolvedSet} accept`];
  for (const c of policyCidrs(policy)) {
    if (c.port === undefined) rules.push(`ip daddr ${c.cidr} accept`);
    else rules.push(`ip daddr ${c.cidr} meta l4proto { tcp, udp } th dport ${c.port} accept`);
  }
  return rules;
}

/** The frames a VM's TAP may carry: its MAC, IPv4 from its address and ARP for it; nothing else (no IPv6). */
function portRules(vm: FirewallVm): string[] {
  return [
    `ether saddr != ${vm.mac} drop`,
    `ether type arp arp saddr ether != ${vm.mac} drop`,
    `ether type arp arp saddr ip != ${vm.ip} drop`,
    "ether type arp accept",
    `ether type ip ip saddr != ${vm.ip} drop`,
    "ether type ip accept",
    "drop",
  ];
}

/** Puts (or replaces) one VM's anti-spoofing, egress and NAT entries, in one transaction. */
export function vmApplyScript(bridge: string, vm: FirewallVm): string {
  const t = nftTable(bridge);
  const n = vmNames(vm.ip, vm.tap);
  const lines = [
    `add chain bridge ${t} ${n.port}`,
    `flush chain bridge ${t} ${n.port}`,
    ...portRules(vm).map((r) => `add rule bridge ${t} ${n.port} ${r}`),
    `add element bridge ${t} ports { ${JSON.stringify(vm.tap)} : jump ${n.port} }`,
    `add element bridge ${t} vm_ports { ${JSON.stringify(vm.tap)} }`,
    `add set inet ${t} ${n.resolved} { type ipv4_addr; flags timeout; }`,
    `flush set inet ${t} ${n.resolved}`,
    `add chain inet ${t} ${n.egress}`,
    `flush chain inet ${t} ${n.egress}`,
    ...egressRules(vm.ip, vm.policy, n.resolved).map((r) => `add rule inet ${t} ${n.egress} ${r}`),
    `add element inet ${t} egress { ${vm.ip} : jump ${n.egress} }`,
    // NAT guests stay in the set `host status` lists; others are taken out of it.
    `add element inet ${t} ${NAT_SET} { ${vm.ip} }`,
    `delete element inet ${t} ${NAT_SET} { ${vm.ip} }`,
  ];
  if (vm.policy.mode === "nat") lines.push(`add element inet ${t} ${NAT_SET} { ${vm.ip} comment "${natComment(vm.ip, vm.tap)}" }`);
  return `${lines.join("\n")}\n`;
}

/** Removes one VM's entries and chains; each is added first, so removing what is gone is not an error. */
export function vmRemoveScript(bridge: string, vm: { ip: string; tap: string }): string {
  const t = nftTable(bridge);
  const n = vmNames(vm.ip, vm.tap);
  const lines = [
    `add chain bridge ${t} ${n.port}`,
    `add element bridge ${t} ports { ${JSON.stringify(vm.tap)} : jump ${n.port} }`,
    `delete element bridge ${t} ports { ${JSON.stringify(vm.tap)} }`,
    `add element bridge ${t} vm_ports { ${JSON.stringify(vm.tap)} }`,
    `delete element bridge ${t} vm_ports { ${JSON.stringify(vm.tap)} }`,
    `flush chain bridge ${t} ${n.port}`,
    `delete chain bridge ${t} ${n.port}`,
    `add chain inet ${t} ${n.egress}`,
    `add element inet ${t} egress { ${vm.ip} : jump ${n.egress} }`,
    `delete element inet ${t} egress { ${vm.ip} }`,
    `flush chain inet ${t} ${n.egress}`,
    `delete chain inet ${t} ${n.egress}`,
    `add set inet ${t} ${n.resolved} { type ipv4_addr; flags timeout; }`,
    `delete set inet ${t} ${n.resolved}`,
    `add element inet ${t} ${NAT_SET} { ${vm.ip} }`,
    `delete element inet ${t} ${NAT_SET} { ${vm.ip} }`,
  ];
  return `${lines.join("\n")}\n`;
}

/** Replaces the group peers: each pair of members of one group may reach each other, both ways. */
export function groupsScript(bridge: string, members: Array<{ ip: string; tap: string; group: string }>): string {
  const t = nftTable(bridge);
  const taps: string[] = [];
  const ips: string[] = [];
  for (const a of members) {
    for (const b of members) {
      if (a === b || a.group !== b.group || !a.group) continue;
      taps.push(`${JSON.stringify(a.tap)} . ${JSON.stringify(b.tap)}`);
      ips.push(`${a.ip} . ${b.ip}`);
    }
  }
  const lines = [`flush set bridge ${t} peers`, `flush set inet ${t} peer_ips`];
  if (taps.length) lines.push(`add element bridge ${t} peers { ${taps.join(", ")} }`, `add element inet ${t} peer_ips { ${ips.join(", ")} }`);
  return `${lines.join("\n")}\n`;
}

/** Opens addresses for a VM until the TTL runs out (re-adding refreshes the timeout). */
export function resolvedScript(bridge: string, ip: string, tap: string, addrs: string[], ttlSeconds: number): string {
  if (!addrs.length) return "";
  const t = nftTable(bridge);
  const set = vmNames(ip, tap).resolved;
  const ttl = Math.min(86_400, Math.max(10, Math.ceil(ttlSeconds)));
  const list = addrs.join(", ");
  return [
    `add element inet ${t} ${set} { ${addrs.map((a) => `${a} timeout ${ttl}s`).join(", ")} }`,
    `delete element inet ${t} ${set} { ${list} }`,
    `add element inet ${t} ${set} { ${addrs.map((a) => `${a} timeout ${ttl}s`).join(", ")} }`,
    "",
  ].join("\n");
}
