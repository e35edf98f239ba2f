import { BangerError } from "../../errors.ts";

const IPV4_PART = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]\\d|\\d)";
const IPV4_RE = new RegExp(`^(?:${IPV4_PART}\\.){3}${IPV4_PART}$`);

/**
 * node:net's isIPv4 (the same pattern), without loading node:net: that costs a few ms of every
 * CLI command that reads the config.
 */
export function isIPv4(text: string): boolean {
  return IPV4_RE.test(text);
}

/** Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL). */
export const IFNAMSIZ_MAX = 15;

export type FirewallKind = "nftables" | "iptables";

/** The host network banger manages: one bridge, its gateway address, a pool of user-owned TAPs. */
export interface HostNetConfig {
  /** Bridge name, e.g. `banger0`. */
  bridge: string;
  /** Gateway address with prefix length, e.g. `172.30.0.1/24`. */
  subnet: string;
  /** TAP name prefix; default `bgr<bridge suffix>t`, so banger0 → bgr0t0, bgr0t1, … */
  tapPrefix?: string;
  /** How many TAPs the pool holds. */
  tapCount: number;
  /** Who may open the TAPs (the user running the daemon). */
  owner: { uid: number; gid: number };
  /**
   * When set, guests' DNS queries to the gateway's port 53 are redirected to this port on
   * the gateway, where an unprivileged daemon can listen (startDnsServer with upstreams).
   */
  guestDnsPort?: number;
  /** Force a firewall backend instead of detecting one. */
  firewall?: FirewallKind;
  /** Write (and by default enable) a systemd unit that repeats setup at boot. */
  systemdUnit?: SystemdUnitSpec;
}

/** Where the boot-time unit goes and what it runs. */
export interface SystemdUnitSpec {
  /** Default /etc/systemd/system/banger-host-<bridge>.service. */
  path?: string;
  /** The command line, e.g. ["/usr/local/bin/banger", "host", "setup"]. */
  exec: string[];
  /** Environment of the boot-time run (e.g. XDG_CONFIG_HOME, so it reads the user's config). */
  env?: Record<string, string>;
  /** Run `systemctl enable` (default true). */
  enable?: boolean;
  /**
   * Files copied into root-owned places before the unit is written (the banger executable, a
   * config snapshot), so what runs as root at boot is nothing the user can change afterwards.
   */
  copies?: RootCopy[];
}

/** One file installed root-owned: its root-owned directories (made 0755) and its mode. */
export interface RootCopy {
  from: string;
  to: string;
  mode: "0755" | "0644";
  /** Directories to own and make 0755, outermost first (to's own directory last). */
  dirs: string[];
}

/** The parsed gateway: `172.30.0.1/24` → gateway, prefix length and network. */
export interface Subnet {
  gateway: string;
  prefix: number;
  cidr: string;
  network: string;
}

/** Parses and checks `subnet`; errors name the config key. */
export function parseSubnet(text: string): Subnet {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(text);
  const prefix = Number(m?.[2]);
  if (!m || !isIPv4(m[1]!) || prefix < 8 || prefix > 30) {
    throw new BangerError("invalid_argument", `invalid bridge subnet "${text}": expected the gateway with a prefix, such as 172.30.0.1/24`, {
      hint: "Fix the bridge subnet in config.toml",
    });
  }
  const ip = ipToInt(m[1]!);
  const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  const network = intToIp((ip & mask) >>> 0);
  if (ip === (ip & mask) >>> 0) {
    throw new BangerError("invalid_argument", `bridge subnet "${text}" names the network, not a gateway address`, {
      hint: `Use a host address such as ${intToIp(ip + 1)}/${prefix}`,
    });
  }
  return { gateway: m[1]!, prefix, cidr: text, network: `${network}/${prefix}` };
}

export function ipToInt(ip: string): number {
  return ip.split(".").reduce((acc, o) => ((acc << 8) | Number(o)) >>> 0, 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
}

const IFNAME = /^[A-Za-z0-9_.-]+$/;

/** Checks a name is a usable interface name (what: "bridge", "TAP"). */
export function checkIfName(name: string, what = "bridge"): void {
  if (!IFNAME.test(name) || name.length > IFNAMSIZ_MAX) {
    throw new BangerError("invalid_argument", `invalid ${what} name "${name}": use at most ${IFNAMSIZ_MAX} letters, digits, '-', '_' or '.'`, {
      hint: what === "bridge" ? "Fix the bridge name in config.toml" : `Pass an existing ${what} interface name`,
    });
  }
}

/** The TAP name prefix: explicit, or derived from the bridge (banger0 → bgr0t). */
export function tapPrefix(cfg: Pick<HostNetConfig, "bridge" | "tapPrefix">): string {
  if (cfg.tapPrefix) return cfg.tapPrefix;
  const suffix = cfg.bridge.startsWith("banger") ? cfg.bridge.slice("banger".length) : cfg.bridge;
  return `bgr${suffix}t`;
}

/** The pool's TAP names in order; throws when they would not fit IFNAMSIZ. */
export function tapNames(cfg: Pick<HostNetConfig, "bridge" | "tapPrefix" | "tapCount">): string[] {
  const prefix = tapPrefix(cfg);
  const longest = `${prefix}${Math.max(0, cfg.tapCount - 1)}`;
  if (!IFNAME.test(prefix) || longest.length > IFNAMSIZ_MAX) {
    throw new BangerError("invalid_argument", `TAP name "${longest}" would exceed ${IFNAMSIZ_MAX} characters (the kernel's limit)`, {
      hint: `Use a bridge name of at most ${IFNAMSIZ_MAX - longest.length + cfg.bridge.length} characters, or fewer TAPs`,
    });
  }
  return Array.from({ length: cfg.tapCount }, (_, i) => `${prefix}${i}`);
}

/** The index of a pool TAP name, or null when the name is not in this pool. */
export function tapIndex(cfg: Pick<HostNetConfig, "bridge" | "tapPrefix">, name: string): number | null {
  const prefix = tapPrefix(cfg);
  if (!name.startsWith(prefix)) return null;
  const rest = name.slice(prefix.length);
  return /^(0|[1-9]\d*)$/.test(rest) ? Number(rest) : null;
}

/** The nftables table that holds this bridge's rules. */
export function nftTable(bridge: string): string {
  return `banger_${bridge.replace(/[^A-Za-z0-9_]/g, "_")}`;
}

/** The iptables chains that hold this bridge's rules (≤ 28 chars with a 15-char bridge). */
export function iptablesChains(bridge: string): { fwd: string; nat: string; dns: string } {
  return { fwd: `BANGER-FWD-${bridge}`, nat: `BANGER-NAT-${bridge}`, dns: `BANGER-DNS-${bridge}` };
}

/** Checks the guest DNS port is a usable port number. */
export function checkDnsPort(port: number | undefined): void {
  if (port === undefined) return;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new BangerError("invalid_argument", `invalid guest DNS port ${port}: expected 1-65535`, { hint: "Fix the DNS port in config.toml" });
  }
}

/** Checks a guest address is a plain IPv4 inside the bridge subnet. */
export function checkGuestIp(subnet: Subnet, ip: string): void {
  const mask = (~0 << (32 - subnet.prefix)) >>> 0;
  if (!isIPv4(ip) || (ipToInt(ip) & mask) >>> 0 !== ipToInt(subnet.network.split("/")[0]!)) {
    throw new BangerError("invalid_argument", `guest address "${ip}" is not an IPv4 address inside ${subnet.network}`, {
      hint: "Guest addresses come from the bridge subnet in config.toml",
    });
  }
}

/** One guest with NAT: its address and the TAP it was started on. */
export interface NatEntry {
  guestIp: string;
  tap: string | null;
}

/** The NAT tag banger writes on per-VM rules so removal finds them again. */
export function natComment(guestIp: string, tap: string): string {
  return `banger-nat tap=${tap} ip=${guestIp}`;
}

/** Reads a tag written by natComment. */
export function parseNatComment(text: string): NatEntry | null {
  const m = /banger-nat tap=(\S*) ip=([\d.]+)/.exec(text);
  return m ? { guestIp: m[2]!, tap: m[1] || null } : null;
}
