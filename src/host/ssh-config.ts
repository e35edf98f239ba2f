import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Paths } from "./paths.ts";
import { SSH_NO_LEAK_OPTIONS } from "./ssh-options.ts";

const BEGIN = "# >>> banger: managed block, remove with `banger ssh-config uninstall` >>>";
const END = "# <<< banger <<<";

/**
 * banger's own ssh config for `*.vm`: its key, its known_hosts, host keys always checked, and
 * nothing of the user's (agent, X11, forwards, local commands) handed to the guest.
 */
export function sshConfigText(paths: Paths, keyPath: string, proxyArgv: string[]): string {
  return `# Written by banger; \`banger ssh-config show\` prints it.
Host *.vm
  User root
  IdentityFile ${keyPath}
  IdentitiesOnly yes
  UserKnownHostsFile ${paths.knownHosts}
  StrictHostKeyChecking yes
${SSH_NO_LEAK_OPTIONS.map((o) => `  ${o.replace("=", " ")}`).join("\n")}
  ProxyCommand ${proxyArgv.map(quote).join(" ")} ssh-config proxy %h %p
`;
}

function quote(s: string): string {
  return /^[A-Za-z0-9_./=:@-]+$/.test(s) ? s : `"${s.replace(/(["\\$`])/g, "\\$1")}"`;
}

/** Writes banger's ssh config file. */
export function writeSshConfig(paths: Paths, keyPath: string, proxyArgv: string[]) {
  mkdirSync(dirname(paths.sshConfigFile), { recursive: true, mode: 0o700 });
  writeFileSync(paths.sshConfigFile, sshConfigText(paths, keyPath, proxyArgv), { mode: 0o600 });
}

function userConfig(paths: Paths): string {
  return join(paths.home, ".ssh", "config");
}

/**
 * Adds a marked Include of banger's file at the top of ~/.ssh/config. At the top, because ssh
 * keeps the first value it reads: the `*.vm` block's no-forwarding options then win over the
 * user's own settings. A block found lower down is moved up; a second call changes nothing.
 */
export function installInclude(paths: Paths): "installed" | "already installed" | "moved to the top" {
  const file = userConfig(paths);
  const current = existsSync(file) ? readFileSync(file, "utf8") : "";
  if (current.startsWith(BEGIN)) return "already installed";
  const had = current.includes(BEGIN);
  const rest = had ? withoutBlock(current) : current;
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${BEGIN}\nInclude ${paths.sshConfigFile}\n${END}\n${rest}`, { mode: 0o600 });
  return had ? "moved to the top" : "installed";
}

function withoutBlock(text: string): string {
  const start = text.indexOf(BEGIN);
  const end = text.indexOf(END, start);
  return text.slice(0, start) + text.slice(end + END.length + 1);
}

/** Removes banger's marked block and nothing else. */
export function uninstallInclude(paths: Paths): "removed" | "not installed" {
  const file = userConfig(paths);
  if (!existsSync(file)) return "not installed";
  const current = readFileSync(file, "utf8");
  if (!current.includes(BEGIN)) return "not installed";
  writeFileSync(file, withoutBlock(current));
  return "removed";
}

/** known_hosts lines for the VMs: `<name>.vm,<ip> <host key>`. */
export function knownHostsText(entries: Array<{ name: string; ip: string; hostKey: string }>): string {
  return entries.map((e) => `${e.name}.vm,${e.ip} ${e.hostKey.split(/\s+/).slice(0, 2).join(" ")}\n`).join("");
}
