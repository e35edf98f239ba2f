import { BangerError } from "../errors.ts";
import { intToIp, ipToInt, isIPv4 } from "../host/network/config.ts";

/**
 * What a VM may reach beyond the bridge:
 * - `none`: nothing (DNS answers only `.vm` names);
 * - `nat`: everything, masqueraded;
 * - `allow`: only the listed domains (the addresses banger's resolver returned to this VM for
 *   them, for the answer's TTL) and CIDR[:port] ranges.
 */
export type NetPolicy = { mode: "none" } | { mode: "nat" } | { mode: "allow"; rules: AllowRule[] };

/** One `allow:` entry: an exact domain, a wildcard (`*.example.org`: its subdomains) or a CIDR with an optional port. */
export type AllowRule = { kind: "domain"; name: string } | { kind: "wildcard"; suffix: string } | { kind: "cidr"; cidr: string; port?: number };

export const NET_POLICY_HINT =
  "Use --net none, --net nat, or --net allow:<rules> with comma-separated domains (api.example.com, *.example.org) " +
  "and CIDR[:port] entries (203.0.113.0/24, 198.51.100.7:443)";

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

function bad(message: string): BangerError {
  return new BangerError("invalid_argument", message, { hint: NET_POLICY_HINT });
}

/** Lower case, no trailing dot: the form names are compared in. */
export function normalizeName(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, "");
}

function checkDomain(name: string, original: string): void {
  const labels = name.split(".");
  if (name.length > 253 || labels.length < 2 || !labels.every((l) => LABEL.test(l))) {
    throw bad(`invalid domain "${original}" in --net allow: expected a name such as api.example.com`);
  }
}

/** Parses `CIDR`, `IP`, `CIDR:port` or `IP:port`; a bare IP is a /32. */
function parseCidrRule(text: string): AllowRule {
  const m = /^(\d+\.\d+\.\d+\.\d+)(?:\/(\d{1,2}))?(?::(\d{1,5}))?$/.exec(text);
  if (!m || !isIPv4(m[1]!)) throw bad(`invalid address "${text}" in --net allow: expected CIDR[:port] such as 203.0.113.0/24 or 203.0.113.7:443`);
  const prefix = m[2] === undefined ? 32 : Number(m[2]);
  if (prefix > 32) throw bad(`invalid prefix length /${m[2]} in "${text}": expected 0-32`);
  const port = m[3] === undefined ? undefined : Number(m[3]);
  if (port !== undefined && (port < 1 || port > 65535)) throw bad(`invalid port ${m[3]} in "${text}": expected 1-65535`);
  const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  const network = intToIp((ipToInt(m[1]!) & mask) >>> 0);
  return port === undefined ? { kind: "cidr", cidr: `${network}/${prefix}` } : { kind: "cidr", cidr: `${network}/${prefix}`, port };
}

function parseRule(text: string): AllowRule {
  const t = normalizeName(text);
  if (/^[\d./:]+$/.test(t)) return parseCidrRule(t);
  if (t.startsWith("*.")) {
    checkDomain(t.slice(2), text);
    return { kind: "wildcard", suffix: t.slice(2) };
  }
  checkDomain(t, text);
  return { kind: "domain", name: t };
}

/** Parses `none`, `nat` or `allow:<rule>,<rule>…`; bad input throws invalid_argument naming the part. */
export function parseNetPolicy(text: string): NetPolicy {
  const t = text.trim();
  if (t === "none" || t === "nat") return { mode: t };
  if (!t.startsWith("allow:")) throw bad(`invalid network policy "${text}": expected none, nat or allow:<rules>`);
  const parts = t
    .slice("allow:".length)
    .split(",")
    .map((p) => p.trim());
  if (parts.some((p) => p === "")) throw bad(`empty rule in network policy "${text}": list rules separated by single commas`);
  const rules: AllowRule[] = [];
  for (const p of parts) {
    const r = parseRule(p);
    if (!rules.some((x) => formatRule(x) === formatRule(r))) rules.push(r);
  }
  if (rules.length > 256) throw bad(`too many rules (${rules.length}) in --net allow: at most 256`);
  return { mode: "allow", rules };
}

function formatRule(r: AllowRule): string {
  if (r.kind === "domain") return r.name;
  if (r.kind === "wildcard") return `*.${r.suffix}`;
  return r.port === undefined ? r.cidr : `${r.cidr}:${r.port}`;
}

/** The canonical text of a policy (what is stored and shown); parseNetPolicy reads it back. */
export function formatNetPolicy(p: NetPolicy): string {
  return p.mode === "allow" ? `allow:${p.rules.map(formatRule).join(",")}` : p.mode;
}

/**
 * True when the policy lets the VM resolve (and then reach) `name` upstream. `.vm` names are
 * not decided here: they follow the guest-to-guest rules.
 */
export function policyAllowsName(policy: NetPolicy, name: string): boolean {
  if (policy.mode === "nat") return true;
  if (policy.mode === "none") return false;
  const n = normalizeName(name);
  return policy.rules.some((r) => (r.kind === "domain" && r.name === n) || (r.kind === "wildcard" && n.endsWith(`.${r.suffix}`)));
}

/** The CIDR rules of a policy (what the firewall allows without DNS). */
export function policyCidrs(policy: NetPolicy): Array<{ cidr: string; port?: number }> {
  if (policy.mode !== "allow") return [];
  return policy.rules.flatMap((r) => (r.kind === "cidr" ? [{ cidr: r.cidr, port: r.port }] : []));
}

/** Ranges a resolved name never opens: private, shared, loopback, link-local (metadata), multicast, reserved. */
const NEVER_RESOLVED = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.168.0.0/16",
  "224.0.0.0/4",
  "240.0.0.0/4",
];

function inCidr(ip: string, cidr: string): boolean {
  const [base, len] = cidr.split("/");
  const prefix = Number(len);
  const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  return (ipToInt(ip) & mask) >>> 0 === (ipToInt(base!) & mask) >>> 0;
}

/**
 * The addresses of a DNS answer that may enter a VM's allowed set: IPv4 only, never private,
 * link-local or reserved ranges, nor any of `hostAddrs` (those stay reachable only as listed CIDRs).
 */
export function resolvedAddrsToAllow(addrs: string[], hostAddrs: string[] = []): string[] {
  return [...new Set(addrs)].filter((a) => isIPv4(a) && !NEVER_RESOLVED.some((c) => inCidr(a, c)) && !hostAddrs.includes(a));
}

/** The policy of a VM row that predates policies: its nat flag. */
export function policyFromRow(row: { net?: string | null; nat: boolean }): NetPolicy {
  if (row.net) {
    try {
      return parseNetPolicy(row.net);
    } catch {
      return { mode: "none" };
    }
  }
  return row.nat ? { mode: "nat" } : { mode: "none" };
}

const GROUP = /^[a-z0-9][a-z0-9_-]{0,31}$/;

/** Checks a `--group` name; "" (or none) means no group. */
export function checkGroup(name: string): string {
  if (name === "" || GROUP.test(name)) return name;
  throw new BangerError("invalid_argument", `invalid group "${name}": use 1-32 lower-case letters, digits, '-' or '_', starting with a letter or digit`, {
    hint: 'Pass --group NAME (e.g. --group web), or --group "" to leave the group',
  });
}
