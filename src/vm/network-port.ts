import { readlinkSync } from "node:fs";
import { basename } from "node:path";
import type { Config } from "../config.ts";
import { BangerError } from "../errors.ts";
import { parseSubnet, tapNames, type HostNetConfig } from "../host/network/config.ts";
import type { NetDeps } from "../host/network/priv.ts";
import { subnetHosts } from "./allocate.ts";
import type { NetworkPort } from "./deps.ts";
import type { VmNet } from "./net-apply.ts";
import { formatNetPolicy, resolvedAddrsToAllow } from "./net-policy.ts";
import { runNetRequest } from "../host/network/net-helper.ts";

/**
 * Where the daemon answers guests' DNS on the bridge address. Guests ask <gateway>:53; host
 * setup redirects that here, so the daemon needs no privilege to bind it.
 */
export const GUEST_DNS_PORT = 42053;

/** The host network config as `host setup` and the daemon both derive it from banger's config. */
export function hostNetConfig(config: Config, owner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }): HostNetConfig {
  return { bridge: config.bridge, subnet: config.subnet, tapCount: config.tap_pool, owner, guestDnsPort: GUEST_DNS_PORT };
}

/** The VM service's view of the host network, over the bridge and TAP pool `host setup` made. */
export function hostNetworkPort(config: Config, net: NetDeps): NetworkPort {
  const cfg = hostNetConfig(config);
  const subnet = parseSubnet(config.subnet);
  // The VMs whose rules this daemon put in place (their resolved sets exist), by id.
  const applied = new Map<string, VmNet>();
  let lastGroups: string | null = null;
  return {
    poolTaps: () => tapNames(cfg),
    async checkTap(tap) {
      let master: string;
      try {
        master = basename(readlinkSync(`/sys/class/net/${tap}/master`));
      } catch {
        throw new BangerError("failed_precondition", `TAP device ${tap} does not exist or is not on bridge ${config.bridge}`, {
          hint: "Run `sudo banger host setup` (once per boot unless you used --systemd).",
        });
      }
      if (master !== config.bridge)
        throw new BangerError("failed_precondition", `TAP device ${tap} is attached to ${master}, not ${config.bridge}`, {
          hint: "Run `sudo banger host setup`.",
        });
    },
    async applyVm(vm) {
      await runNetRequest(net, config.bridge, { op: "apply", ip: vm.ip, mac: vm.mac, tap: vm.tap, net: formatNetPolicy(vm.policy) });
      applied.set(vm.id, vm);
    },
    async removeVm(vm) {
      applied.delete(vm.id);
      await runNetRequest(net, config.bridge, { op: "remove", ip: vm.ip, tap: vm.tap });
    },
    async setGroups(members) {
      const key = JSON.stringify(members);
      if (key === lastGroups) return;
      await runNetRequest(net, config.bridge, { op: "groups", members });
      lastGroups = key;
    },
    async allowResolved(vmId, addrs, ttlSeconds) {
      const vm = applied.get(vmId);
      if (vm?.policy.mode !== "allow") return;
      const open = resolvedAddrsToAllow(addrs, [subnet.gateway]).slice(0, 64);
      if (open.length) await runNetRequest(net, config.bridge, { op: "resolved", ip: vm.ip, tap: vm.tap, addrs: open, ttl: ttlSeconds });
    },
    gateway: () => ({ ip: subnet.gateway, prefix: subnet.prefix, mask: subnetHosts(config.subnet).mask }),
    nameservers: () => [subnet.gateway],
  };
}
