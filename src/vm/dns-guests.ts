import type { DnsGuest, DnsGuests } from "../host/dns-policy.ts";
import type { VmRow, VmStore } from "../store/vms.ts";
import type { NetworkPort } from "./deps.ts";
import { policyFromRow } from "./net-policy.ts";

/** What the guest resolver's view of the VMs is built from. */
export interface DnsGuestsDeps {
  vms: Pick<VmStore, "list">;
  /** The running VMs' `.vm` records (name → address), as the DNS server answers them. */
  records: () => ReadonlyMap<string, string>;
  network: Pick<NetworkPort, "allowResolved">;
}

function toGuest(row: VmRow): DnsGuest {
  return { id: row.id, name: row.name, policy: policyFromRow(row), groups: row.net_group ? [row.net_group] : [] };
}

/** States in which a VM's guest may be up and asking (booting ones too: they resolve before `ready`). */
const UP: ReadonlySet<VmRow["state"]> = new Set(["creating", "starting", "running", "stopping"]);

/**
 * The VMs as the guest resolver sees them: a query's source address names a VM that may be up
 * (the bridge's anti-spoofing keeps a guest to its own address); `.vm` names are those of running
 * VMs with a record. Policy and group are read from the store on each query, so `vm set --net`
 * and `--group` apply at once.
 */
export function vmDnsGuests(deps: DnsGuestsDeps): DnsGuests {
  const find = (match: (row: VmRow) => boolean): DnsGuest | null => {
    const row = deps.vms.list().find(match);
    return row ? toGuest(row) : null;
  };
  return {
    at: (ip) => find((v) => v.ip === ip && UP.has(v.state)),
    named: (key) => find((v) => v.name.toLowerCase() === key && deps.records().get(v.name) === v.ip),
    allowResolved: (vmId, addrs, ttl) => deps.network.allowResolved(vmId, addrs, ttl),
  };
}
