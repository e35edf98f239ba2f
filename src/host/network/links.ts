import { BangerError } from "../../errors.ts";
import { type HostNetConfig, parseSubnet, tapIndex, tapNames } from "./config.ts";
import { type NetDeps, priv, read } from "./priv.ts";

/** One network interface as `ip -j -d link show` reports it. */
export interface LinkInfo {
  name: string;
  kind: string | null;
  up: boolean;
  master: string | null;
  alias: string | null;
}

/** A pool TAP and who may open it. */
export interface TapInfo {
  name: string;
  index: number;
  master: string | null;
  up: boolean;
  uid: number | null;
  gid: number | null;
}

/** The bridge marks itself with this alias, which also remembers the forwarding setting banger found. */
export const ALIAS_PREFIX = "banger ip_forward_was=";

/** A snapshot of the links and TAP owners on the host. */
export interface LinkState {
  links: Map<string, LinkInfo>;
  owners: Map<string, { uid: number; gid: number }>;
}

/** Reads every link and TAP owner (no privilege needed). */
export async function readLinks(deps: NetDeps): Promise<LinkState> {
  const raw = JSON.parse((await read(deps, ["ip", "-j", "-d", "link", "show"])).stdout || "[]") as any[];
  const links = new Map<string, LinkInfo>();
  for (const l of raw) {
    links.set(l.ifname, {
      name: l.ifname,
      kind: l.linkinfo?.info_kind ?? null,
      up: Array.isArray(l.flags) && l.flags.includes("UP"),
      master: l.master ?? null,
      alias: l.ifalias ?? null,
    });
  }
  const taps = JSON.parse((await read(deps, ["ip", "-j", "tuntap", "show"])).stdout || "[]") as any[];
  const owners = new Map<string, { uid: number; gid: number }>();
  for (const t of taps) owners.set(t.ifname, { uid: Number(t.user ?? -1), gid: Number(t.group ?? -1) });
  return { links, owners };
}

/** The IPv4 addresses (with prefix) on an interface. */
export async function readAddrs(deps: NetDeps, dev: string): Promise<string[]> {
  const raw = JSON.parse((await read(deps, ["ip", "-j", "-4", "addr", "show", "dev", dev])).stdout || "[]") as any[];
  return raw.flatMap((l) => (l.addr_info ?? []).map((a: any) => `${a.local}/${a.prefixlen}`));
}

/** The kernel's IPv4 forwarding switch. */
export async function readForwarding(deps: NetDeps): Promise<boolean> {
  return (await read(deps, ["sysctl", "-n", "net.ipv4.ip_forward"])).stdout.trim() === "1";
}

/** Creates the bridge, marks it, gives it the gateway address, brings it up; returns what it did. */
export async function ensureBridge(deps: NetDeps, cfg: HostNetConfig, state: LinkState): Promise<string[]> {
  const { bridge } = cfg;
  const subnet = parseSubnet(cfg.subnet);
  const actions: string[] = [];
  const link = state.links.get(bridge);
  if (link && link.kind !== "bridge") {
    throw new BangerError("failed_precondition", `interface ${bridge} exists but is a ${link.kind ?? "plain"} device, not a bridge`, {
      hint: `Remove it (\`sudo ip link del ${bridge}\`) or choose another bridge name in config.toml`,
    });
  }
  if (!link) {
    await priv(deps, ["ip", "link", "add", bridge, "type", "bridge"]);
    actions.push(`created bridge ${bridge}`);
  }
  if (!link?.alias?.startsWith(ALIAS_PREFIX)) {
    // Remember forwarding as found before banger touched it, so teardown can put it back.
    const was = (await readForwarding(deps)) ? "1" : "0";
    await priv(deps, ["ip", "link", "set", "dev", bridge, "alias", `${ALIAS_PREFIX}${was}`]);
    actions.push(`marked ${bridge} as banger's (ip_forward was ${was})`);
  }
  const addrs = link ? await readAddrs(deps, bridge) : [];
  if (!addrs.includes(`${subnet.gateway}/${subnet.prefix}`)) {
    await priv(deps, ["ip", "addr", "add", `${subnet.gateway}/${subnet.prefix}`, "dev", bridge]);
    actions.push(`added ${subnet.gateway}/${subnet.prefix} to ${bridge}`);
  }
  if (!link?.up) {
    await priv(deps, ["ip", "link", "set", "dev", bridge, "up"]);
    actions.push(`brought ${bridge} up`);
  }
  actions.push(...(await ensureNoRouterAds(deps, bridge)));
  return actions;
}

/** The bridge never takes router advertisements (a guest could otherwise route the host). */
async function ensureNoRouterAds(deps: NetDeps, bridge: string): Promise<string[]> {
  const key = `net.ipv6.conf.${bridge}.accept_ra`;
  // Without IPv6 on the host there is nothing to turn off.
  const now = await read(deps, ["sysctl", "-n", key]).then(
    (r) => r.stdout.trim(),
    () => null,
  );
  if (now === null || now === "0") return [];
  await priv(deps, ["sysctl", "-q", "-w", `${key}=0`]);
  return [`set ${key}=0`];
}

/** Turns IPv4 forwarding on (needed for NAT); returns what it did. */
export async function ensureForwarding(deps: NetDeps): Promise<string[]> {
  if (await readForwarding(deps)) return [];
  await priv(deps, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
  return ["enabled net.ipv4.ip_forward"];
}

/** Creates the TAP pool owned by the user, each attached to the bridge and up; returns what it did. */
export async function ensureTaps(deps: NetDeps, cfg: HostNetConfig, state: LinkState): Promise<string[]> {
  const actions: string[] = [];
  for (const name of tapNames(cfg)) {
    let link = state.links.get(name);
    const owner = state.owners.get(name);
    if (link && (link.kind !== "tun" || !owner)) {
      throw new BangerError("failed_precondition", `interface ${name} exists but is not a TAP device`, {
        hint: `Remove it (\`sudo ip link del ${name}\`) or set another TAP prefix`,
      });
    }
    if (link && (owner!.uid !== cfg.owner.uid || owner!.gid !== cfg.owner.gid)) {
      // A TAP's owner cannot be changed in place: recreate it for the right user.
      await priv(deps, ["ip", "link", "del", "dev", name]);
      actions.push(`removed ${name} (owned by ${owner!.uid}:${owner!.gid})`);
      link = undefined;
    }
    if (!link) {
      await priv(deps, ["ip", "tuntap", "add", "dev", name, "mode", "tap", "user", String(cfg.owner.uid), "group", String(cfg.owner.gid)]);
      actions.push(`created TAP ${name} for ${cfg.owner.uid}:${cfg.owner.gid}`);
    }
    if (link?.master !== cfg.bridge || !link.up) {
      await priv(deps, ["ip", "link", "set", "dev", name, "master", cfg.bridge, "up"]);
      actions.push(`attached ${name} to ${cfg.bridge}`);
    }
  }
  return actions;
}

/** The pool TAPs present on the host, in index order (extra ones beyond tapCount included). */
export function poolTaps(cfg: HostNetConfig, state: LinkState): TapInfo[] {
  const out: TapInfo[] = [];
  for (const link of state.links.values()) {
    const index = tapIndex(cfg, link.name);
    if (index === null || link.kind !== "tun") continue;
    const owner = state.owners.get(link.name);
    out.push({ name: link.name, index, master: link.master, up: link.up, uid: owner?.uid ?? null, gid: owner?.gid ?? null });
  }
  return out.sort((a, b) => a.index - b.index);
}

/** Deletes the pool TAPs and the bridge; puts forwarding back if banger turned it on. */
export async function removeLinks(deps: NetDeps, cfg: HostNetConfig, state: LinkState): Promise<string[]> {
  const actions: string[] = [];
  for (const tap of poolTaps(cfg, state)) {
    await priv(deps, ["ip", "link", "del", "dev", tap.name]);
    actions.push(`removed TAP ${tap.name}`);
  }
  const bridge = state.links.get(cfg.bridge);
  if (bridge?.kind !== "bridge") return actions;
  await priv(deps, ["ip", "link", "del", "dev", cfg.bridge]);
  actions.push(`removed bridge ${cfg.bridge}`);
  actions.push(...(await restoreForwarding(deps, cfg.bridge, bridge.alias, state)));
  return actions;
}

/**
 * Restores ip_forward=0 when banger found it off, unless another banger bridge still needs
 * it; then the memory passes to that bridge so the last teardown restores it.
 */
async function restoreForwarding(deps: NetDeps, bridge: string, alias: string | null, state: LinkState): Promise<string[]> {
  if (alias !== `${ALIAS_PREFIX}0`) return [];
  const other = [...state.links.values()].find((l) => l.name !== bridge && l.kind === "bridge" && l.alias?.startsWith(ALIAS_PREFIX));
  if (other) {
    if (other.alias !== `${ALIAS_PREFIX}0`) await priv(deps, ["ip", "link", "set", "dev", other.name, "alias", `${ALIAS_PREFIX}0`]);
    return [`left net.ipv4.ip_forward on for ${other.name}`];
  }
  if (!(await readForwarding(deps))) return [];
  await priv(deps, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"]);
  return ["restored net.ipv4.ip_forward=0"];
}
