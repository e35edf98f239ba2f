import { basename } from "node:path";
import type { HostNetConfig, SystemdUnitSpec } from "./config.ts";
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
  return [`removed ${path}`];
}
