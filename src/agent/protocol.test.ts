import { expect, test } from "bun:test";
import { encodeLine, lineSplitter, parseRequest, parseResponse } from "./protocol.ts";

test("requests and responses round-trip as single lines", () => {
  const line = encodeLine({ id: 7, method: "health" });
  expect(line).toBe('{"id":7,"method":"health"}\n');
  expect(parseRequest(line.trim())).toEqual({ id: 7, method: "health", params: undefined });
  expect(parseResponse('{"id":7,"ok":true,"result":{"a":1}}')).toEqual({ id: 7, ok: true, result: { a: 1 } });
  expect(parseResponse('{"id":8,"ok":false,"error":{"message":"boom"}}')).toEqual({ id: 8, ok: false, error: { message: "boom" } });
});

test("garbage is refused", () => {
  for (const bad of ["", "nonsense", "[]", '{"method":"health"}', '{"id":"1","method":"health"}', '{"id":1,"ok":true}']) {
    expect(parseRequest(bad) ?? parseResponse(bad)).toBeNull();
  }
});

test("a request after a stray fragment on the same line is still understood", () => {
  expect(parseRequest('{"id":3,"meth{"id":4,"method":"ports"}')).toEqual({ id: 4, method: "ports", params: undefined });
  expect(parseRequest('\u0000\u0000xx{"id":5,"method":"health"}')?.id).toBe(5);
});

test("lineSplitter joins partial chunks, strips CR and drops over-long lines", () => {
  const lines: string[] = [];
  const feed = lineSplitter((l) => lines.push(l), 16);
  feed("ab");
  feed(new TextEncoder().encode("c\r\n\n  \nd"));
  feed("e\n");
  feed("x".repeat(20));
  feed("yyy\nok\n");
  expect(lines).toEqual(["abc", "de", "ok"]);
});

test("multi-byte characters split across chunks survive", () => {
  const lines: string[] = [];
  const feed = lineSplitter((l) => lines.push(l));
  const bytes = new TextEncoder().encode("héllo\n");
  feed(bytes.subarray(0, 2));
  feed(bytes.subarray(2));
  expect(lines).toEqual(["héllo"]);
});
