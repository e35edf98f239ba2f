import { expect, test } from "bun:test";
import { checkAnswer, MAX_PORTS } from "./answers.ts";

const health = { version: "0.1.0+abc", uptime_s: 12.5, boot_id: "8c1f", hostname: "web" };

test("a well-formed health answer passes unchanged", () => {
  expect(checkAnswer("health", health)).toEqual(health);
});

test("extra keys (a guest naming itself) are dropped; wrong types and over-long strings are refused, naming the field", () => {
  expect(checkAnswer("health", { ...health, name: "admin" })).toEqual(health);
  expect(() => checkAnswer("health", { ...health, uptime_s: "12" })).toThrow(/at uptime_s/);
  expect(() => checkAnswer("health", { ...health, uptime_s: -1 })).toThrow(/at uptime_s/);
  expect(() => checkAnswer("health", { ...health, hostname: "h".repeat(300) })).toThrow(/at hostname/);
  expect(() => checkAnswer("health", { version: "v" })).toThrow(/at uptime_s: missing/);
  expect(() => checkAnswer("health", null)).toThrow(/"health" is malformed/);
});

test("ports: bad entries are refused; a flood is cut to MAX_PORTS and the rest counted", () => {
  const sock = (port: number) => ({ proto: "tcp" as const, address: "0.0.0.0", port });
  expect(() => checkAnswer("ports", { sockets: [{ ...sock(1), proto: "sctp" }] })).toThrow(/at sockets\[0\]\.proto/);
  expect(() => checkAnswer("ports", { sockets: [sock(70000)] })).toThrow(/at sockets\[0\]\.port/);
  expect(checkAnswer("ports", { sockets: [{ ...sock(1), extra: 1 }] }).sockets).toEqual([sock(1)]);
  const flood = checkAnswer("ports", { sockets: Array.from({ length: 100_000 }, (_, i) => sock(i % 65536)) });
  expect(flood.sockets).toHaveLength(MAX_PORTS);
  expect(flood.dropped).toBe(100_000 - MAX_PORTS);
  expect(checkAnswer("ports", { sockets: [sock(22)] }).dropped).toBeUndefined();
});

test("guest text in an error message is printable", () => {
  const err = (() => {
    try {
      checkAnswer("ports", { sockets: { ["\x1b]52;c;eA==\x07k"]: 1 } });
    } catch (e) {
      return e as Error;
    }
  })();
  expect(err?.message).not.toContain("\x1b");
});
