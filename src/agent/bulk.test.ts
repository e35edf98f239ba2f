import { expect, test } from "bun:test";
import { sameBytes } from "./bulk.ts";

test("sameBytes: equal only for the same length and every byte the same", () => {
  const token = Buffer.from("a".repeat(64));
  expect(sameBytes(token, Buffer.from("a".repeat(64)))).toBe(true);
  expect(sameBytes(token, Buffer.from(`${"a".repeat(63)}b`))).toBe(false);
  expect(sameBytes(token, Buffer.from(`b${"a".repeat(63)}`))).toBe(false);
  expect(sameBytes(token, Buffer.from("a".repeat(63)))).toBe(false);
  expect(sameBytes(new Uint8Array(0), new Uint8Array(0))).toBe(true);
  expect(sameBytes(Uint8Array.of(0x80), Uint8Array.of(0x00))).toBe(false);
});
