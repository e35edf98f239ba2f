import { chmodSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { BangerError } from "../errors.ts";
import type { Runner } from "./runner.ts";

/** Makes banger's ed25519 key on first use (0600, dir 0700) and returns its public half. */
export async function ensureSshKey(keyPath: string, runner: Runner): Promise<string> {
  if (!existsSync(keyPath)) {
    mkdirSync(dirname(keyPath), { recursive: true, mode: 0o700 });
    const r = await runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "banger", "-f", keyPath], { allowFailure: true });
    if (r.code !== 0) {
      throw new BangerError("failed_precondition", `could not create the SSH key ${keyPath}: ${r.stderr.trim()}`, {
        hint: "Install openssh-client (ssh-keygen), or set ssh_key in the config to an existing ed25519 key.",
      });
    }
  }
  chmodSync(keyPath, 0o600);
  const pub = `${keyPath}.pub`;
  if (!existsSync(pub)) {
    const r = await runner.run(["ssh-keygen", "-y", "-f", keyPath]);
    await Bun.write(pub, r.stdout);
  }
  return readFileSync(pub, "utf8").trim();
}
