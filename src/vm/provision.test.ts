import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostRunner } from "../host/runner.ts";
import { gitIdentity } from "./provision.ts";

const homes: string[] = [];
afterEach(() => {
  for (const h of homes.splice(0)) rmSync(h, { recursive: true, force: true });
});

function home(gitconfig?: string): string {
  const h = mkdtempSync(join(tmpdir(), "banger-provision-"));
  homes.push(h);
  if (gitconfig !== undefined) writeFileSync(join(h, ".gitconfig"), gitconfig);
  return h;
}

test("the host's git identity becomes the guest's .gitconfig; a key set twice keeps its last value", async () => {
  const h = home("[user]\n\tname = Ada Lovelace\n\temail = old@example.com\n[user]\n\temail = ada@example.com\n[core]\n\teditor = vi\n");
  expect(await gitIdentity(hostRunner, h)).toBe("[user]\n\tname = Ada Lovelace\n\temail = ada@example.com\n");
});

test("only the name set: only the name goes; nothing set (or no .gitconfig): no .gitconfig", async () => {
  expect(await gitIdentity(hostRunner, home("[user]\n\tname = Ada\n"))).toBe("[user]\n\tname = Ada\n");
  expect(await gitIdentity(hostRunner, home("[core]\n\teditor = vi\n"))).toBeUndefined();
  expect(await gitIdentity(hostRunner, home())).toBeUndefined();
});

test("keys that only look alike (user.namex, a subsection) are not taken", async () => {
  const h = home('[user]\n\tnamex = Nope\n[user "work"]\n\temail = work@example.com\n');
  expect(await gitIdentity(hostRunner, h)).toBeUndefined();
});
