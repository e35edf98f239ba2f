import { loadConfig } from "../config.ts";
import { hostSetup as setup, hostStatus as status, hostTeardown as teardown } from "../host/network.ts";
import { existsSync, readFileSync } from "node:fs";
import { BangerError } from "../errors.ts";
import { bootInstallPaths, type Paths, resolvePaths } from "../host/paths.ts";
import type { RootCopy, SystemdUnitSpec } from "../host/network/config.ts";
import { hostRunner } from "../host/runner.ts";
import { installHelper, netApplyMain, removeHelper } from "../host/network/net-helper.ts";
import { hostNetConfig } from "../vm/network-port.ts";
import { selfArgv } from "../self.ts";
import { printJson, table, type Out } from "./render.ts";

/** Who host setup works for: TAP owner and whose config names the bridge, subnet and pool. */
export interface Invoker {
  uid: number;
  gid: number;
  paths: Paths;
}

/**
 * The user behind this call: `--owner UID:GID` when given (the boot-time unit), else the one
 * who ran sudo (with their own config: sudo resets HOME, so it comes from the passwd entry),
 * else the caller.
 */
export function invoker(
  env: Record<string, string | undefined> = process.env,
  ownerFlag?: string,
  homeOf: (user: string) => string | null = passwdHome,
): Invoker {
  if (ownerFlag !== undefined) {
    const m = /^(\d+):(\d+)$/.exec(ownerFlag);
    if (!m) throw new BangerError("invalid_argument", `--owner ${ownerFlag}: expected UID:GID, e.g. 1000:1000`);
    return { uid: Number(m[1]), gid: Number(m[2]), paths: resolvePaths(env) };
  }
  if (env.SUDO_USER && env.SUDO_UID && env.SUDO_UID !== "0") {
    const uid = Number(env.SUDO_UID);
    const gid = Number(env.SUDO_GID ?? env.SUDO_UID);
    // A HOME other than root's was kept or set on purpose (sudo -E, a test's home): it stands.
    const homeReset = !env.HOME || env.HOME === (homeOf("root") ?? "/root");
    const home = homeReset ? homeOf(env.SUDO_USER) : env.HOME;
    return { uid, gid, paths: resolvePaths({ ...env, HOME: home ?? env.HOME }) };
  }
  return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, paths: resolvePaths(env) };
}

/** A user's home directory from /etc/passwd, or null. */
function passwdHome(user: string): string | null {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${user}:`));
  return line?.split(":")[5] || null;
}

function net() {
  return { runner: hostRunner, sudo: process.getuid?.() !== 0 };
}

/** The host network as that user's config describes it, with their TAP ownership. */
function netConfigFor(who: Invoker) {
  return hostNetConfig(loadConfig(who.paths), { uid: who.uid, gid: who.gid });
}

/** The unit that repeats this setup at boot, as root, for the same user and config. */
/**
 * The boot-time unit runs as root, so it runs nothing the user can change later: a root-owned
 * copy of this executable and a root-owned snapshot of the user's config, both made now.
 */
export function bootUnit(who: Invoker, bridge: string, self: string[] = selfArgv(), configExists = existsSync(who.paths.configFile)): SystemdUnitSpec {
  const at = bootInstallPaths(bridge);
  const copies: RootCopy[] = [
    { from: self[0]!, to: at.binary, mode: "0755", dirs: [at.binDir] },
    // No config file: the snapshot is empty, so the boot-time run uses the defaults, as the user does.
    { from: configExists ? who.paths.configFile : "/dev/null", to: at.configFile, mode: "0644", dirs: at.configDirs },
  ];
  return { exec: [at.binary, "host", "setup", "--owner", `${who.uid}:${who.gid}`], env: { XDG_CONFIG_HOME: at.configHome }, copies };
}

/** The compiled executable is what gets copied; `bun src/main.ts` is a runtime plus a source tree. */
function compiledSelf(): string[] {
  const self = selfArgv();
  if (self.length === 1) return self;
  throw new BangerError("failed_precondition", "host setup --systemd installs a root-owned copy of the banger executable, and this is banger run from source", {
    hint: "Build it (bun run build) and run dist/banger host setup --systemd.",
  });
}

/** `banger host setup`: bridge, forwarding, NAT rules, TAP pool; prints what changed. */
export async function hostSetup(out: Out, o: { systemd?: boolean; owner?: string }) {
  const who = invoker(process.env, o.owner);
  const cfg = netConfigFor(who);
  if (o.systemd) cfg.systemdUnit = bootUnit(who, cfg.bridge, compiledSelf());
  const actions = await setup(net(), cfg);
  // A non-root owner changes per-VM rules through one root-owned helper and one sudoers line.
  if (process.getuid?.() === 0)
    actions.push(...(await installHelper(net(), { bridge: cfg.bridge, uid: who.uid, self: selfArgv().length === 1 ? selfArgv()[0]! : null })));
  out.out(actions.length ? actions.map((a) => `+ ${a}`).join("\n") : "host already set up; nothing changed");
}

/** `banger host teardown`: removes everything setup made. */
export async function hostTeardown(out: Out) {
  const who = invoker();
  const cfg = netConfigFor(who);
  cfg.systemdUnit = bootUnit(who, cfg.bridge);
  const actions = await teardown(net(), cfg);
  if (process.getuid?.() === 0) actions.push(...(await removeHelper(cfg.bridge)));
  out.out(actions.length ? actions.map((a) => `- ${a}`).join("\n") : "nothing to remove");
}

/** `banger net-apply <bridge>` (hidden; root, through sudo): one per-VM firewall request from stdin. */
export async function netApply(bridge: string): Promise<number> {
  const stdin = await new Response(Bun.stdin.stream()).text();
  await netApplyMain({ runner: hostRunner, sudo: false }, bridge, stdin, process.env);
  return 0;
}

/** `banger host status [--json]`. */
export async function hostStatus(out: Out, o: { json?: boolean }) {
  const s = await status(net(), netConfigFor(invoker()));
  if (o.json) return printJson(out, s);
  out.out(
    table(
      ["PART", "STATE", "DETAIL"],
      [
        [
          "bridge",
          s.bridge.present ? (s.bridge.up ? "up" : "down") : "missing",
          `${s.bridge.name} ${s.bridge.addresses.join(" ") || `(want ${s.bridge.expected})`}`,
        ],
        ["taps", s.tapsMissing.length ? "incomplete" : "ok", `${s.taps.length} present${s.tapsMissing.length ? `, missing: ${s.tapsMissing.join(" ")}` : ""}`],
        ["firewall", s.rulesPresent ? "ok" : "missing", `${s.firewall}, ${s.nat.length} NAT entries`],
        ["forwarding", s.forwarding ? "on" : "off", ""],
      ],
    ),
  );
  if (!s.ready) out.out("\nnot ready: run `sudo banger host setup`");
  return s.ready ? 0 : 1;
}
