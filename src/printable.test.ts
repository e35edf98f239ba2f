import { expect, test } from "bun:test";
import { printable } from "./printable.ts";

const bad = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

test("removes colours, OSC 52 clipboard writes, titles and C1 controls whole", () => {
  expect(printable("\x1b[1;31mred\x1b[0m")).toBe("red");
  expect(printable("a\x1b]52;c;ZWNobyBwd25lZA==\x07b")).toBe("ab");
  expect(printable("a\x1b]0;title\x1b\\b")).toBe("ab");
  expect(printable("a\x9b31mb\x9d0;t\x9cc")).toBe("abc");
  expect(printable("bell\x07 del\x7f nul\x00 bs\x08")).toBe("bell del nul bs");
  expect(printable("x\x1bcy")).toBe("xy");
});

test("keeps lines and tabs for logs, flattens them otherwise; plain Unicode is untouched", () => {
  expect(printable("one\r\ntwo\tthree\n", { lines: true })).toBe("one\ntwo\tthree\n");
  expect(printable("one\ntwo\tthree")).toBe("one two three");
  expect(printable("héllo ✓ 日本")).toBe("héllo ✓ 日本");
});

test("no control byte survives any input", () => {
  for (let i = 0; i < 200; i++) {
    const s = Array.from({ length: 64 }, () => String.fromCharCode(Math.floor(Math.random() * 0xa0))).join("");
    expect(bad.test(printable(s, { lines: true }))).toBe(false);
    expect(/[\x00-\x1f\x7f-\x9f]/.test(printable(s))).toBe(false);
  }
});
