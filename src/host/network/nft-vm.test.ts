import { expect, test } from "bun:test";
import { parseNetPolicy } from "../../vm/net-policy.ts";
import { groupsScript, resolvedScript, vmApplyScript, vmNames, vmRemoveScript } from "./nft-vm.ts";

const vm = { ip: "172.30.0.5", mac: "52:54:00:aa:bb:cc", tap: "bgr0t1", policy: parseNetPolicy("allow:svc.test,198.18.0.0/15,203.0.113.7:443") };
const lines = (s: string) => s.trim().split("\n");

test("names come from the address and the TAP, escaped for nft", () => {
  expect(vmNames("172.30.0.5", "bgr0t1")).toEqual({ egress: "egress_172_30_0_5", resolved: "resolved_172_30_0_5", port: "port_bgr0t1" });
  expect(vmNames("172.30.0.5", "a-b.c_d").port).toBe("port_a_2db_2ec_5fd");
});

test("apply: the TAP carries only the VM's MAC, its IPv4 and ARP for it; egress follows the allow rules", () => {
  const s = lines(vmApplyScript("banger0", vm));
  expect(s).toContain("add rule bridge banger_banger0 port_bgr0t1 ether saddr != 52:54:00:aa:bb:cc drop");
  expect(s).toContain("add rule bridge banger_banger0 port_bgr0t1 ether type arp arp saddr ip != 172.30.0.5 drop");
  expect(s).toContain("add rule bridge banger_banger0 port_bgr0t1 ether type ip ip saddr != 172.30.0.5 drop");
  // Everything else (IPv6, router advertisements, VLANs) ends at the chain's last rule.
  expect(s.filter((l) => l.startsWith("add rule bridge")).at(-1)).toBe("add rule bridge banger_banger0 port_bgr0t1 drop");
  expect(s).toContain('add element bridge banger_banger0 ports { "bgr0t1" : jump port_bgr0t1 }');
  expect(s).toContain("add rule inet banger_banger0 egress_172_30_0_5 ip daddr @resolved_172_30_0_5 accept");
  expect(s).toContain("add rule inet banger_banger0 egress_172_30_0_5 ip daddr 198.18.0.0/15 accept");
  expect(s).toContain("add rule inet banger_banger0 egress_172_30_0_5 ip daddr 203.0.113.7/32 meta l4proto { tcp, udp } th dport 443 accept");
  expect(s.at(-1)).toBe("delete element inet banger_banger0 nat_guests { 172.30.0.5 }");
});

test("apply: none has an empty egress chain; nat joins the NAT set, tagged", () => {
  const none = lines(vmApplyScript("banger0", { ...vm, policy: { mode: "none" } }));
  expect(none.filter((l) => l.startsWith("add rule inet"))).toEqual([]);
  const nat = lines(vmApplyScript("banger0", { ...vm, policy: { mode: "nat" } }));
  expect(nat.at(-1)).toBe('add element inet banger_banger0 nat_guests { 172.30.0.5 comment "banger-nat tap=bgr0t1 ip=172.30.0.5" }');
});

test("remove adds each thing before deleting it, so a second removal is not an error", () => {
  const s = lines(vmRemoveScript("banger0", vm));
  for (const [i, l] of s.entries()) {
    if (!l.startsWith("delete ")) continue;
    const what = l.replace(/^delete (element|chain|set) /, "").replace(/ \{.*$/, "");
    expect(s.slice(0, i).some((p) => p.startsWith("add ") && p.includes(what))).toBe(true);
  }
});

test("groups: peers of one group both ways, by TAP pair and address pair; nobody else", () => {
  const s = groupsScript("banger0", [
    { ip: "172.30.0.2", tap: "t0", group: "a" },
    { ip: "172.30.0.3", tap: "t1", group: "a" },
    { ip: "172.30.0.4", tap: "t2", group: "b" },
  ]);
  expect(lines(s)).toEqual([
    "flush set bridge banger_banger0 peers",
    "flush set inet banger_banger0 peer_ips",
    'add element bridge banger_banger0 peers { "t0" . "t1", "t1" . "t0" }',
    "add element inet banger_banger0 peer_ips { 172.30.0.2 . 172.30.0.3, 172.30.0.3 . 172.30.0.2 }",
  ]);
  expect(lines(groupsScript("banger0", []))).toHaveLength(2);
});

test("resolved addresses get the answer's TTL (at least 10 s, at most a day), refreshed when repeated", () => {
  const s = lines(resolvedScript("banger0", vm.ip, vm.tap, ["198.18.0.9"], 3));
  expect(s).toEqual([
    "add element inet banger_banger0 resolved_172_30_0_5 { 198.18.0.9 timeout 10s }",
    "delete element inet banger_banger0 resolved_172_30_0_5 { 198.18.0.9 }",
    "add element inet banger_banger0 resolved_172_30_0_5 { 198.18.0.9 timeout 10s }",
  ]);
  expect(resolvedScript("banger0", vm.ip, vm.tap, ["198.18.0.9"], 1e9)).toContain("timeout 86400s");
  expect(resolvedScript("banger0", vm.ip, vm.tap, [], 60)).toBe("");
});
