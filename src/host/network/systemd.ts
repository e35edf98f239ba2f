import { basename } from "node:path";
import type { HostNetConfig, RootCopy, SystemdUnitSpec } from "./config.ts";
import { type NetDeps, priv } from "./priv.ts";

/** Where the unit goes unless the caller says otherwise. */
export function systemdUnitPath(cfg: Pick<HostNetConfig, "bridge">, spec: SystemdUnitSpec): string {
  return spec.path ?? `/etc/systemd/system/banger-host-${cfg.bridge}.service`;
}

/** Quotes one ExecStart word the way systemd unquotes it. */
function quoteWord(w: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `"${w.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** The unit text: a oneshot that repeats `banger host setup` at boot, after the distro's firewall loads (it may flush the ruleset). */
export function systemdUnitText(cfg: Pick<HostNetConfig, "bridge">, spec: SystemdUnitSpec): string {
  return [
    "[Unit]",
    `Description=banger host networking (bridge ${cfg.bridge}, TAP pool, NAT rules)`,
    "After=network.target nftables.service iptables.service netfilter-persistent.service firewalld.service",
    "",
    "[Service]",
    "Type=oneshot",
    "RemainAfterExit=yes",
    ...Object.entries(spec.env ?? {}).map(([k, v]) => `Environment=${quoteWord(`${k}=${v}`)}`),
    `ExecStart=${spec.exec.map(quoteWord).join(" ")}`,
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/** Writes the unit when its text differs and enables it; returns what it did. */
export async function ensureSystemdUnit(deps: NetDeps, cfg: HostNetConfig, spec: SystemdUnitSpec): Promise<string[]> {
  const path = systemdUnitPath(cfg, spec);
  const text = systemdUnitText(cfg, spec);
  const actions: string[] = [];
  for (const copy of spec.copies ?? []) actions.push(...(await ensureRootCopy(deps, copy)));
  const current = await priv(deps, ["cat", path], { allowFailure: true });
  if (current.code !== 0 || current.stdout !== text) {
    await priv(deps, ["tee", path], { stdin: text });
    actions.push(`wrote ${path}`);
  }
  if (spec.enable !== false) {
    const unit = basename(path);
    const state = await priv(deps, ["systemctl", "is-enabled", unit], { allowFailure: true });
    if (actions.length || state.stdout.trim() !== "enabled") {
      await priv(deps, ["systemctl", "daemon-reload"]);
      await priv(deps, ["systemctl", "enable", unit]);
      actions.push(`enabled ${unit}`);
    }
  }
  return actions;
}

/** Disables and deletes the unit if present; returns what it did. */
export async function removeSystemdUnit(deps: NetDeps, cfg: HostNetConfig, spec: SystemdUnitSpec): Promise<string[]> {
  const path = systemdUnitPath(cfg, spec);
  if ((await priv(deps, ["test", "-e", path], { allowFailure: true })).code !== 0) return [];
  if (spec.enable !== false) await priv(deps, ["systemctl", "disable", basename(path)], { allowFailure: true });
  await priv(deps, ["rm", "-f", path]);
  const actions = [`removed ${path}`];
  for (const copy of spec.copies ?? []) {
    if ((await priv(deps, ["test", "-e", copy.to], { allowFailure: true })).code !== 0) continue;
    await priv(deps, ["rm", "-f", copy.to]);
    actions.push(`removed ${copy.to}`);
  }
  return actions;
}

/**
 * Installs one root-owned copy (directories root:root 0755, the file root:root at its mode)
 * unless an identical one is already in place; returns what it did.
 */
export async function ensureRootCopy(deps: NetDeps, copy: RootCopy): Promise<string[]> {
  const same = await priv(deps, ["cmp", "-s", copy.from, copy.to], { allowFailure: true });
  const meta = await priv(deps, ["stat", "-c", "%u:%g:%a", copy.to, ...copy.dirs], { allowFailure: true });
  const want = [`0:0:${Number(copy.mode).toString()}`, ...copy.dirs.map(() => "0:0:755")].join("\n");
  if (same.code === 0 && meta.code === 0 && meta.stdout.trim() === want) return [];
  await priv(deps, ["install", "-d", "-o", "root", "-g", "root", "-m", "0755", ...copy.dirs]);
  await priv(deps, ["install", "-o", "root", "-g", "root", "-m", copy.mode, copy.from, copy.to]);
  return [`installed root-owned ${copy.to} (from ${copy.from})`];
}
