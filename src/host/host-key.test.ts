import { afterAll, describe, expect } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hasBin, testNeeds } from "../testing/skip.ts";
import { ed25519KeyPair } from "./host-key.ts";

const dir = mkdtempSync(join(tmpdir(), "banger-hostkey-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const needs: Array<[boolean, string]> = [[hasBin("ssh-keygen"), "needs ssh-keygen (openssh-client)"]];
const keygen = (args: string[], stdin?: string) => Bun.spawnSync(["ssh-keygen", ...args], { stdin: stdin === undefined ? "ignore" : new Blob([stdin]) });

describe("ed25519KeyPair", () => {
  testNeeds("OpenSSH reads the private key, derives the same public key, and its signatures verify", needs, () => {
    const key = ed25519KeyPair("vm1.vm");
    const path = join(dir, "host_key");
    writeFileSync(path, key.privateKey, { mode: 0o600 });
    expect(key.publicKey).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5[A-Za-z0-9+/]+=* vm1\.vm\n$/);
    const derived = keygen(["-y", "-f", path]);
    expect(derived.exitCode).toBe(0);
    expect(derived.stdout.toString().trim()).toBe(key.publicKey.trim());
    writeFileSync(join(dir, "msg"), "hello\n");
    expect(keygen(["-Y", "sign", "-f", path, "-n", "file", join(dir, "msg")]).exitCode).toBe(0);
    const [type, b64] = key.publicKey.split(" ");
    writeFileSync(join(dir, "allowed"), `vm1 ${type} ${b64}\n`);
    const verify = keygen(["-Y", "verify", "-f", join(dir, "allowed"), "-I", "vm1", "-n", "file", "-s", join(dir, "msg.sig")], "hello\n");
    expect(verify.stdout.toString()).toContain('Good "file" signature for vm1');
  });

  testNeeds("each pair is new", needs, () => {
    expect(ed25519KeyPair("a").publicKey).not.toBe(ed25519KeyPair("a").publicKey);
  });
});
