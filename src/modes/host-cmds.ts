import { loadConfig } from "../config.ts";
import { hostSetup as setup, hostStatus as status, hostTeardown as teardown } from "../host/network.ts";
import { resolvePaths } from "../host/paths.ts";
import { hostRunner } from "../host/runner.ts";
import { hostNetConfig } from "../vm/network-port.ts";
import { selfArgv } from "./autostart.ts";
import { printJson, table, type Out } from "./render.ts";

/** The user the TAPs belong to: the one who ran sudo, else the caller. */
function owner() {
  const uid = Number(process.env.SUDO_UID ?? process.getuid?.() ?? 0);
  const gid = Number(process.env.SUDO_GID ?? process.getgid?.() ?? 0);
  return { uid, gid };
}

function net() {
  return { runner: hostRunner, sudo: process.getuid?.() !== 0 };
}

/** `banger host setup`: bridge, forwarding, NAT rules, TAP pool; prints what changed. */
export async function hostSetup(out: Out, o: { systemd?: boolean }) {
  const cfg = hostNetConfig(loadConfig(resolvePaths()), owner());
  if (o.systemd) cfg.systemdUnit = { exec: [...selfArgv(), "host", "setup"] };
  const actions = await setup(net(), cfg);
  out.out(actions.length ? actions.map((a) => `+ ${a}`).join("\n") : "host already set up; nothing changed");
}

/** `banger host teardown`: removes everything setup made. */
export async function hostTeardown(out: Out) {
  const cfg = hostNetConfig(loadConfig(resolvePaths()), owner());
  cfg.systemdUnit = { exec: [...selfArgv(), "host", "setup"] };
  const actions = await teardown(net(), cfg);
  out.out(actions.length ? actions.map((a) => `- ${a}`).join("\n") : "nothing to remove");
}

/** `banger host status [--json]`. */
export async function hostStatus(out: Out, o: { json?: boolean }) {
  const s = await status(net(), hostNetConfig(loadConfig(resolvePaths()), owner()));
  if (o.json) return printJson(out, s);
  out.out(
    table(
      ["PART", "STATE", "DETAIL"],
      [
        ["bridge", s.bridge.present ? (s.bridge.up ? "up" : "down") : "missing", `${s.bridge.name} ${s.bridge.addresses.join(" ") || `(want ${s.bridge.expected})`}`],
        ["taps", s.tapsMissing.length ? "incomplete" : "ok", `${s.taps.length} present${s.tapsMissing.length ? `, missing: ${s.tapsMissing.join(" ")}` : ""}`],
        ["firewall", s.rulesPresent ? "ok" : "missing", `${s.firewall}, ${s.nat.length} NAT entries`],
        ["forwarding", s.forwarding ? "on" : "off", ""],
      ],
    ),
  );
  if (!s.ready) out.out("\nnot ready: run `sudo banger host setup`");
  return s.ready ? 0 : 1;
}
