import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { Paths } from "./paths.ts";

const BEGIN = "# >>> banger: managed block, remove with `banger ssh-config uninstall` >>>";
const END = "# <<< banger <<<";

/** banger's own ssh config for `*.vm`: its key, its known_hosts, host keys always checked. */
export function sshConfigText(paths: Paths, keyPath: string, proxyArgv: string[]): string {
  return `# Written by banger; \`banger ssh-config show\` prints it.
Host *.vm
  User root
  IdentityFile ${keyPath}
  IdentitiesOnly yes
  UserKnownHostsFile ${paths.knownHosts}
  StrictHostKeyChecking yes
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

/** Adds a marked Include of banger's file at the top of ~/.ssh/config; a second call changes nothing. */
export function installInclude(paths: Paths): "installed" | "already installed" {
  const file = userConfig(paths);
  const current = existsSync(file) ? readFileSync(file, "utf8") : "";
  if (current.includes(BEGIN)) return "already installed";
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${BEGIN}\nInclude ${paths.sshConfigFile}\n${END}\n${current}`, { mode: 0o600 });
  return "installed";
}

/** Removes banger's marked block and nothing else. */
export function uninstallInclude(paths: Paths): "removed" | "not installed" {
  const file = userConfig(paths);
  if (!existsSync(file)) return "not installed";
  const current = readFileSync(file, "utf8");
  const start = current.indexOf(BEGIN);
  if (start < 0) return "not installed";
  const end = current.indexOf(END, start);
  writeFileSync(file, current.slice(0, start) + current.slice(end + END.length + 1));
  return "removed";
}

/** known_hosts lines for the VMs: `<name>.vm,<ip> <host key>`. */
export function knownHostsText(entries: Array<{ name: string; ip: string; hostKey: string }>): string {
  return entries.map((e) => `${e.name}.vm,${e.ip} ${e.hostKey.split(/\s+/).slice(0, 2).join(" ")}\n`).join("");
}
