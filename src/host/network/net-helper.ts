import { readFileSync, readlinkSync } from "node:fs";
import { basename } from "node:path";
import * as v from "valibot";
import { BangerError } from "../../errors.ts";
import { parseNetPolicy } from "../../vm/net-policy.ts";
import { checkGuestIp, checkIfName, nftTable, parseSubnet, type Subnet } from "./config.ts";
import { ALIAS_PREFIX, readAddrs } from "./links.ts";
import { groupsScript, resolvedScript, vmApplyScript, vmRemoveScript } from "./nft-vm.ts";
import { type NetDeps, priv } from "./priv.ts";

// The one root entry point for per-VM firewall changes. A daemon that is not root runs
// `sudo -n <helper> net-apply <bridge>` (the only command its sudoers line allows) with one
// request as JSON on stdin; the helper, a root-owned copy of banger, validates the request
// against the bridge itself (banger's mark, its subnet, its ports) and writes the nft script
// from it. A daemon that is root does the same in-process.

/** Where `host setup` installs the root-owned helper for a bridge. */
export const HELPER_DIR = "/usr/local/libexec/banger";

export function helperPath(bridge: string): string {
  return `${HELPER_DIR}/${bridge}/banger`;
}

/** The sudoers file `host setup` writes for a non-root owner. */
export function sudoersPath(bridge: string): string {
  return `/etc/sudoers.d/banger-${bridge.replace(/[^A-Za-z0-9_-]/g, "_")}`;
}

/** The sudoers line: exactly the helper with `net-apply <bridge>`, nothing else. */
export function sudoersLine(uid: number, bridge: string): string {
  return `#${uid} ALL=(root) NOPASSWD: ${helperPath(bridge)} net-apply ${bridge}`;
}

const ip = v.pipe(v.string(), v.ip(), v.maxLength(15));
const ifname = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.-]{1,15}$/));
const mac = v.pipe(v.string(), v.regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/));

/** What a daemon may ask for. */
export const NET_REQUEST = v.variant("op", [
  v.strictObject({ op: v.literal("apply"), ip, mac, tap: ifname, net: v.pipe(v.string(), v.maxLength(16384)) }),
  v.strictObject({ op: v.literal("remove"), ip, tap: ifname }),
  v.strictObject({
    op: v.literal("groups"),
    members: v.pipe(v.array(v.strictObject({ ip, tap: ifname, group: v.pipe(v.string(), v.maxLength(64)) })), v.maxLength(1024)),
  }),
  v.strictObject({
    op: v.literal("resolved"),
    ip,
    tap: ifname,
    addrs: v.pipe(v.array(ip), v.maxLength(64)),
    ttl: v.pipe(v.number(), v.minValue(0), v.maxValue(1e9)),
  }),
]);

export type NetRequest = v.InferOutput<typeof NET_REQUEST>;

/** The bridge as the host has it: banger's mark and its subnet (read from the kernel, never taken from the request). */
async function bridgeSubnet(deps: NetDeps, bridge: string): Promise<Subnet> {
  checkIfName(bridge);
  let alias = "";
  try {
    alias = readFileSync(`/sys/class/net/${bridge}/ifalias`, "utf8").trim();
  } catch {}
  const addr = alias.startsWith(ALIAS_PREFIX) ? (await readAddrs(deps, bridge).catch(() => []))[0] : undefined;
  if (!addr) throw new BangerError("failed_precondition", `${bridge} is not a bridge banger set up`, { hint: "Run `sudo banger host setup`." });
  return parseSubnet(addr);
}

/** A TAP must be a port of this bridge (and, when a user asks through sudo, that user's). */
function checkPort(bridge: string, tap: string, uid: number | null): void {
  let master = "";
  try {
    master = basename(readlinkSync(`/sys/class/net/${tap}/master`));
  } catch {}
  if (master !== bridge) throw new BangerError("invalid_argument", `${tap} is not a port of ${bridge}`, { hint: "Run `sudo banger host setup`." });
  if (uid === null) return;
  let owner = "";
  try {
    owner = readFileSync(`/sys/class/net/${tap}/owner`, "utf8").trim();
  } catch {}
  if (owner !== String(uid)) throw new BangerError("permission_denied", `${tap} does not belong to uid ${uid}`);
}

/** The nft script for a validated request on this bridge. */
export async function requestScript(deps: NetDeps, bridge: string, req: NetRequest, uid: number | null = null): Promise<string> {
  const subnet = await bridgeSubnet(deps, bridge);
  const guest = (addr: string) => {
    checkGuestIp(subnet, addr);
    if (addr === subnet.gateway) throw new BangerError("invalid_argument", `${addr} is the bridge's own address`);
  };
  switch (req.op) {
    case "apply":
      guest(req.ip);
      checkPort(bridge, req.tap, uid);
      return vmApplyScript(bridge, { ip: req.ip, mac: req.mac, tap: req.tap, policy: parseNetPolicy(req.net) });
    case "remove":
      guest(req.ip);
      return vmRemoveScript(bridge, req);
    case "groups":
      for (const m of req.members) {
        guest(m.ip);
        checkPort(bridge, m.tap, uid);
      }
      return groupsScript(bridge, req.members);
    case "resolved":
      guest(req.ip);
      return resolvedScript(bridge, req.ip, req.tap, req.addrs, req.ttl);
  }
}

/** Runs a request as root (this process is root): validate, write the script, apply it in one transaction. */
export async function executeNetRequest(deps: NetDeps, bridge: string, req: NetRequest, uid: number | null = null): Promise<void> {
  const script = await requestScript(deps, bridge, req, uid);
  if (!script) return;
  const r = await priv(deps, ["nft", "-f", "-"], { stdin: script, allowFailure: true });
  if (r.code === 0) return;
  // Removing what `host teardown` already removed is not an error.
  if (req.op === "remove" && (await priv(deps, ["nft", "list", "table", "inet", nftTable(bridge)], { allowFailure: true })).code !== 0) return;
  throw new BangerError("failed_precondition", `nft refused banger's rules for ${bridge}: ${r.stderr.trim().split("\n")[0]}`, {
    hint: "Check `banger host status`; `sudo banger host setup` repairs the tables",
  });
}

/** Asks for a per-VM change: in-process as root, else through the one sudo entry point. */
export async function runNetRequest(deps: NetDeps, bridge: string, req: NetRequest): Promise<void> {
  if (!deps.sudo) return executeNetRequest(deps, bridge, req);
  const argv = ["sudo", "-n", helperPath(bridge), "net-apply", bridge];
  let r;
  try {
    r = await deps.runner.run(argv, { stdin: JSON.stringify(req), allowFailure: true });
  } catch (err) {
    throw new BangerError("permission_denied", `per-VM firewall rules need root, and \`${argv.join(" ")}\` could not run: ${(err as Error).message}`, {
      hint: HELPER_HINT,
    });
  }
  if (r.code === 0) return;
  const msg = (r.stderr || r.stdout).trim().split("\n")[0] ?? "";
  if (/^sudo: /m.test(r.stderr))
    throw new BangerError("permission_denied", `\`sudo -n ${helperPath(bridge)} net-apply ${bridge}\` was refused: ${msg}`, { hint: HELPER_HINT });
  throw new BangerError("failed_precondition", `banger's firewall helper failed: ${msg}`, { hint: HELPER_HINT });
}

export const HELPER_HINT = "Run `sudo banger host setup` once: it installs the root-owned helper and the one sudoers line it needs";

/** `banger net-apply <bridge>` (as root, through sudo): one request from stdin. */
export async function netApplyMain(deps: NetDeps, bridge: string, stdin: string, env: Record<string, string | undefined>): Promise<void> {
  if (process.getuid?.() !== 0) throw new BangerError("permission_denied", "net-apply runs as root, through sudo");
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch {
    throw new BangerError("invalid_argument", "net-apply: the request on stdin is not JSON");
  }
  const parsed = v.safeParse(NET_REQUEST, raw);
  if (!parsed.success) throw new BangerError("invalid_argument", `net-apply: invalid request: ${parsed.issues.map((i) => i.message).join("; ")}`);
  const uid = env.SUDO_UID && env.SUDO_UID !== "0" ? Number(env.SUDO_UID) : null;
  await executeNetRequest(deps, bridge, parsed.output, uid);
}

/** What `host setup` needs to install the helper: the banger executable to copy, if compiled. */
export interface HelperInstall {
  bridge: string;
  uid: number;
  /** The compiled banger to copy; null when running from sources (nothing to copy). */
  self: string | null;
}

/**
 * Installs the root-owned helper copy and the one sudoers line for a non-root owner; returns
 * what it did (empty when all was in place). Runs as root (host setup).
 */
export async function installHelper(deps: NetDeps, h: HelperInstall): Promise<string[]> {
  const { chmodSync, chownSync, existsSync, mkdirSync, renameSync, writeFileSync, copyFileSync } = await import("node:fs");
  if (h.uid === 0) return [];
  if (!h.self) return [`skipped the firewall helper: banger is not a compiled executable here`];
  const actions: string[] = [];
  const path = helperPath(h.bridge);
  const dir = path.slice(0, path.lastIndexOf("/"));
  for (const d of [HELPER_DIR, dir]) {
    mkdirSync(d, { recursive: true, mode: 0o755 });
    chownSync(d, 0, 0);
    chmodSync(d, 0o755);
  }
  if (!existsSync(path) || !(await sameFile(path, h.self))) {
    // Copy next to it, then rename: a running helper is never overwritten in place.
    copyFileSync(h.self, `${path}.new`);
    chownSync(`${path}.new`, 0, 0);
    chmodSync(`${path}.new`, 0o755);
    renameSync(`${path}.new`, path);
    actions.push(`installed the firewall helper ${path} (root-owned copy of banger)`);
  }
  const sudoers = sudoersPath(h.bridge);
  const text = `# banger: uid ${h.uid} may change banger's per-VM firewall rules on ${h.bridge}, and nothing else\n${sudoersLine(h.uid, h.bridge)}\n`;
  if (!existsSync(sudoers) || readFileSync(sudoers, "utf8") !== text) {
    writeFileSync(`${sudoers}.tmp`, text, { mode: 0o440 });
    const check = await deps.runner.run(["visudo", "-cf", `${sudoers}.tmp`], { allowFailure: true }).catch(() => null);
    if (check && check.code !== 0) throw new BangerError("internal", `visudo refused banger's sudoers line: ${check.stderr.trim()}`);
    renameSync(`${sudoers}.tmp`, sudoers);
    actions.push(`allowed uid ${h.uid} \`sudo -n ${path} net-apply ${h.bridge}\` (${sudoers})`);
  }
  return actions;
}

/** Removes the helper and its sudoers line; returns what it did. */
export async function removeHelper(bridge: string): Promise<string[]> {
  const { existsSync, rmSync } = await import("node:fs");
  const actions: string[] = [];
  const path = helperPath(bridge);
  if (existsSync(sudoersPath(bridge))) {
    rmSync(sudoersPath(bridge), { force: true });
    actions.push(`removed ${sudoersPath(bridge)}`);
  }
  if (existsSync(path)) {
    rmSync(path.slice(0, path.lastIndexOf("/")), { recursive: true, force: true });
    actions.push(`removed ${path}`);
  }
  return actions;
}

async function sameFile(a: string, b: string): Promise<boolean> {
  const [fa, fb] = [Bun.file(a), Bun.file(b)];
  if (fa.size !== fb.size) return false;
  const hash = async (f: typeof fa) => new Bun.CryptoHasher("sha256").update(await f.arrayBuffer()).digest("hex");
  return (await hash(fa)) === (await hash(fb));
}
