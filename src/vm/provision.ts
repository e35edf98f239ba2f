import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Config } from "../config.ts";
import type { ConfigDriveSpec, SyncFile } from "../images/config-drive.ts";
import type { Runner } from "../host/runner.ts";

/** Expands `[[file_sync]]` entries against the host: missing paths are skipped with a warning. */
export function fileSyncEntries(config: Config, home: string, warn: (msg: string) => void): SyncFile[] {
  const files: SyncFile[] = [];
  config.file_sync.forEach((entry, i) => {
    const host = entry.host.startsWith("~/") ? join(home, entry.host.slice(2)) : entry.host;
    if (!existsSync(host)) {
      warn(`file_sync[${i}]: ${host} does not exist; skipped`);
      return;
    }
    const isDir = statSync(host).isDirectory();
    const mode = entry.mode ? Number.parseInt(entry.mode, 8) : undefined;
    files.push({ guestPath: entry.guest, hostPath: host, isDir, mode: isDir ? mode : (mode ?? 0o600) });
  });
  return files;
}

/** The host's global git identity, as a .gitconfig for the guest (undefined when unset): one git run for both keys. */
export async function gitIdentity(runner: Runner, home: string): Promise<string | undefined> {
  const argv = ["git", "config", "--global", "-z", "--get-regexp", "^user\\.(name|email)$"];
  const r = await runner.run(argv, { allowFailure: true, env: { HOME: home } }).catch(() => null);
  const found = new Map<string, string>();
  // -z: each entry is "key\nvalue\0"; a key set twice keeps its last value, as `git config --get` does.
  for (const entry of r?.code === 0 ? r.stdout.split("\0") : []) {
    const nl = entry.indexOf("\n");
    if (nl > 0) found.set(entry.slice(0, nl), entry.slice(nl + 1).trim());
  }
  const name = found.get("user.name") ?? "";
  const email = found.get("user.email") ?? "";
  if (!name && !email) return undefined;
  return `[user]\n${name ? `\tname = ${name}\n` : ""}${email ? `\temail = ${email}\n` : ""}`;
}

/** Everything that goes onto a VM's config drive at one start. */
export async function provisionSpec(opts: {
  name: string;
  config: Config;
  home: string;
  runner: Runner;
  publicKey: string;
  hostKeyPath: string;
  nameservers: string[];
  agent?: { version: string; binaryPath: string };
  warn(msg: string): void;
}): Promise<ConfigDriveSpec> {
  return {
    hostname: opts.name,
    authorizedKeys: [opts.publicKey],
    hostKey: { private: readFileSync(opts.hostKeyPath, "utf8"), public: readFileSync(`${opts.hostKeyPath}.pub`, "utf8") },
    resolvConf: `${opts.nameservers.map((n) => `nameserver ${n}`).join("\n")}\nsearch vm\n`,
    gitconfig: await gitIdentity(opts.runner, opts.home),
    files: fileSyncEntries(opts.config, opts.home, opts.warn),
    agent: opts.agent,
    env: {},
  };
}
