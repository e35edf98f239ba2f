import { isAbsolute } from "node:path";
import { BangerError } from "../errors.ts";
import { ipToInt, isIPv4, parseSubnet } from "../host/network/config.ts";
import { SSH_NO_LEAK_OPTIONS } from "../host/ssh-options.ts";
import { VM_NAME_RE } from "../rpc/contract.ts";

import type { SshInfo } from "../rpc/results.ts";

/** What `vm.ssh-info` answers (defined with the other RPC results). */
export type { SshInfo };

/** A login name ssh and the guest accept as just a name (never an option such as `-oProxyCommand=…`). */
export const SSH_USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

function refuse(what: string, value: string): BangerError {
  return new BangerError("permission_denied", `the daemon's ssh details for this VM are not safe to use: ${what} ${JSON.stringify(value.slice(0, 80))}`, {
    hint: "Nothing was run. Check what answers on banger's socket (`banger daemon status`) and restart it with `banger daemon stop`.",
  });
}

/** True when ip is a guest address of the subnet: inside it, and not its network, broadcast or gateway address. */
export function guestAddressInSubnet(ip: string, subnet: string): boolean {
  if (!isIPv4(ip)) return false;
  const s = parseSubnet(subnet);
  const size = 2 ** (32 - s.prefix);
  const base = ipToInt(s.network.split("/")[0]!);
  const n = ipToInt(ip);
  return n > base && n < base + size - 1 && ip !== s.gateway;
}

/**
 * Checks the daemon's answer before any of it goes on a command line or picks where the
 * workspace is sent: a strict user name, a VM name, an absolute key path, an address in the
 * subnet. Throws permission_denied naming the bad field.
 */
export function checkSshInfo(info: SshInfo, subnet: string): SshInfo {
  const str = (x: unknown) => (typeof x === "string" ? x : String(x));
  if (typeof info.user !== "string" || !SSH_USER_RE.test(info.user)) throw refuse("user", str(info.user));
  if (typeof info.name !== "string" || !VM_NAME_RE.test(info.name)) throw refuse("name", str(info.name));
  if (typeof info.ip !== "string" || !guestAddressInSubnet(info.ip, subnet)) throw refuse(`address (not a guest address of ${subnet})`, str(info.ip));
  if (typeof info.key !== "string" || !isAbsolute(info.key) || /[\0-\x1f\x7f]/.test(info.key)) throw refuse("key path", str(info.key));
  return info;
}

/** The system ssh argv into a checked VM: banger's key and known_hosts, the no-leak options, then `--`. */
export function systemSshArgv(info: SshInfo, knownHosts: string, remote: string | null, tty: boolean): string[] {
  const opts = [
    "IdentitiesOnly=yes",
    `UserKnownHostsFile=${knownHosts}`,
    "StrictHostKeyChecking=yes",
    `HostKeyAlias=${info.name}.vm`,
    "LogLevel=ERROR",
    ...SSH_NO_LEAK_OPTIONS,
  ];
  return ["-i", info.key, ...opts.flatMap((o) => ["-o", o]), ...(tty ? ["-t"] : []), "--", `${info.user}@${info.ip}`, ...(remote ? [remote] : [])];
}
