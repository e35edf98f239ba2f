import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { guestShellContract } from "../testing/shell-contract.ts";
import { localShell, shq } from "./shell.ts";

const root = mkdtempSync(join(tmpdir(), "banger-shell-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("localShell", () => {
  guestShellContract("local", () => localShell(root));

  test("runs in the stand-in /root with HOME pointing there", async () => {
    expect((await localShell(root).exec('pwd; echo "$HOME"')).stdout).toBe(`${root}\n${root}\n`);
  });
});

test("shq quotes what sh would split or expand", async () => {
  const words = ["plain", "with space", "it's", "$HOME", "a;b", "", "-n"];
  const r = await localShell(root).exec(`printf '%s\\n' ${words.map(shq).join(" ")}`);
  expect(r.stdout).toBe(words.map((w) => `${w}\n`).join(""));
});
