import { readFile } from "node:fs/promises";
import net from "node:net";

/** Where the host's resolver configuration lives; a seam so tests can pass fixtures. */
export interface ResolvDeps {
  readFile(path: string): Promise<string | null>;
}

/** The files read, in order: the usual one, then systemd-resolved's list of real upstreams. */
export const RESOLV_CONF = "/etc/resolv.conf";
export const RESOLVED_UPSTREAM_CONF = "/run/systemd/resolve/resolv.conf";

/** Reads files for real; a missing or unreadable file is null. */
export const fsResolvDeps: ResolvDeps = {
  readFile: (path) => readFile(path, "utf8").catch(() => null),
};

/** The `nameserver` addresses of a resolv.conf text, in order, deduplicated, zone ids dropped. */
export function parseResolvConf(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/[#;].*$/, "").trim();
    const m = /^nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    const addr = m[1]!.replace(/%.*$/, "");
    if (net.isIP(addr) !== 0 && !out.includes(addr)) out.push(addr);
  }
  return out;
}

/** True for 127.0.0.0/8, ::1 and 0.0.0.0/:: — addresses a guest cannot use as its resolver. */
export function isLoopback(addr: string): boolean {
  if (net.isIPv4(addr)) return addr.startsWith("127.") || addr === "0.0.0.0";
  const a = addr.toLowerCase();
  return a === "::1" || a === "::" || a.startsWith("::ffff:127.");
}

/**
 * The host's real upstream DNS servers, never loopback: from /etc/resolv.conf, or, when
 * that only names a local stub (systemd-resolved's 127.0.0.53), from resolved's own list.
 * Empty when none is known; the caller then serves `.vm` only.
 */
export async function hostUpstreams(deps: ResolvDeps = fsResolvDeps): Promise<string[]> {
  const main = parseResolvConf((await deps.readFile(RESOLV_CONF)) ?? "");
  const real = main.filter((a) => !isLoopback(a));
  if (real.length > 0 || main.length === 0) return real;
  const resolved = parseResolvConf((await deps.readFile(RESOLVED_UPSTREAM_CONF)) ?? "");
  return resolved.filter((a) => !isLoopback(a));
}
