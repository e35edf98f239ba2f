import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { logTail, tailLines, tailRotated } from "./tail.ts";

const dir = mkdtempSync(join(tmpdir(), "banger-tail-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("returns the last n lines, with or without a final newline; a missing file is empty", () => {
  const f = join(dir, "a.log");
  writeFileSync(f, "one\ntwo\nthree\n");
  expect(tailLines(f, 2)).toBe("two\nthree\n");
  expect(tailLines(f, 10)).toBe("one\ntwo\nthree\n");
  writeFileSync(f, "one\ntwo\nthree");
  expect(tailLines(f, 2)).toBe("two\nthree");
  expect(tailLines(join(dir, "none"), 5)).toBe("");
});

test("reads only from the end: a long file costs at most maxBytes, and a cut line is dropped", () => {
  const f = join(dir, "big.log");
  const lines = Array.from({ length: 200_000 }, (_, i) => `line ${i}`);
  writeFileSync(f, lines.join("\n") + "\n");
  expect(tailLines(f, 3)).toBe("line 199997\nline 199998\nline 199999\n");
  const capped = tailLines(f, 1_000_000, 1000);
  expect(capped.length).toBeLessThanOrEqual(1000);
  expect(capped.startsWith("line ")).toBe(true);
  expect(capped.endsWith("line 199999\n")).toBe(true);
});

test("one endless line (no newline) is bounded too", () => {
  const f = join(dir, "flood.log");
  writeFileSync(f, "x".repeat(3 << 20));
  expect(tailLines(f, 10, 1 << 20).length).toBeLessThanOrEqual(1 << 20);
});

test("after a rotation the missing lines come from the end of .1", () => {
  const f = join(dir, "console.log");
  writeFileSync(`${f}.1`, "old1\nold2\nold3\n");
  writeFileSync(f, "new1\n");
  expect(tailRotated(f, 3)).toBe("old2\nold3\nnew1\n");
  expect(tailRotated(f, 1)).toBe("new1\n");
  writeFileSync(f, "");
  expect(tailRotated(f, 2)).toBe("old2\nold3\n");
  rmSync(`${f}.1`);
  expect(tailRotated(f, 2)).toBe("");
});

test("logTail: a VMM log's last three lines on one line, escape sequences removed; nothing is '(no output)'", () => {
  const f = join(dir, "vmm.log");
  writeFileSync(f, "one\ntwo\n\x1b]0;owned\x07three\nfour\x1b[2J\n");
  expect(logTail(f)).toBe("two | three | four");
  expect(logTail(join(dir, "absent.log"))).toBe("(no output)");
  writeFileSync(f, "");
  expect(logTail(f)).toBe("(no output)");
});
