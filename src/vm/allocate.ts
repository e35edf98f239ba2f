import { BangerError } from "../errors.ts";
import { intToIp, ipToInt, parseSubnet } from "../host/network/config.ts";

/** The guest addresses a subnet offers: everything but network, gateway (the bridge) and broadcast. */
export function subnetHosts(subnet: string): { gateway: string; prefix: number; mask: string; hosts: () => Generator<string> } {
  const parsed = parseSubnet(subnet);
  const gw = ipToInt(parsed.gateway);
  const maskInt = (0xffffffff << (32 - parsed.prefix)) >>> 0;
  const network = (gw & maskInt) >>> 0;
  const broadcast = (network | (~maskInt >>> 0)) >>> 0;
  return {
    gateway: parsed.gateway,
    prefix: parsed.prefix,
    mask: intToIp(maskInt),
    *hosts() {
      for (let i = network + 1; i < broadcast; i++) if (i !== gw) yield intToIp(i);
    },
  };
}

/** A stable, locally administered MAC derived from the guest IP (unique because the IP is). */
export function macFor(ip: string): string {
  const n = ipToInt(ip);
  return ["06", "ba", ...[24, 16, 8, 0].map((s) => ((n >>> s) & 255).toString(16).padStart(2, "0"))].join(":");
}

export interface Taken {
  ips: Set<string>;
  cids: Set<number>;
  taps: Set<string>;
}

export interface Allocation {
  ip: string;
  mac: string;
  cid: number;
  tap: string;
}

/** Picks the lowest free IP, CID and TAP; callers hold the allocation lock and persist the result at once. */
export function allocate(subnet: string, taps: string[], taken: Taken): Allocation {
  let ip: string | undefined;
  for (const candidate of subnetHosts(subnet).hosts()) {
    if (!taken.ips.has(candidate)) {
      ip = candidate;
      break;
    }
  }
  if (!ip)
    throw new BangerError("failed_precondition", `no free guest address left in ${subnet}`, {
      hint: "Delete unused VMs, or set a larger `subnet` in the config.",
    });
  const tap = taps.find((t) => !taken.taps.has(t));
  if (!tap) {
    throw new BangerError("failed_precondition", `all ${taps.length} TAP devices of the pool are in use`, {
      hint: "Delete unused VMs, or raise `tap_pool` in the config and run `sudo banger host setup` again.",
    });
  }
  let cid = 3;
  while (taken.cids.has(cid)) cid++;
  return { ip, mac: macFor(ip), cid, tap };
}
