import { expect, test } from "bun:test";
import { inflateSync } from "node:zlib";
import { looseObject, parseCatFileBatch, parseRawChanges } from "./files-sync.ts";

test("raw diff-tree output: modes, ids, status and paths (names with spaces kept)", () => {
  const a = "a".repeat(40);
  const b = "b".repeat(40);
  const out = `:100644 100755 ${a} ${b} M\0bin/run me\0:000000 120000 ${"0".repeat(40)} ${b} A\0link\0:100644 000000 ${a} ${"0".repeat(40)} D\0gone\0`;
  expect(parseRawChanges(out)).toEqual([
    { newMode: "100755", newId: b, status: "M", path: "bin/run me" },
    { newMode: "120000", newId: b, status: "A", path: "link" },
    { newMode: "000000", newId: "0".repeat(40), status: "D", path: "gone" },
  ]);
});

test("cat-file --batch output is split by the sizes it states (binary data with newlines kept); a missing object throws", () => {
  const enc = new TextEncoder();
  const data = new Uint8Array([0, 10, 255, 10]);
  const out = new Uint8Array([...enc.encode(`${"c".repeat(40)} blob 4\n`), ...data, 10, ...enc.encode(`${"d".repeat(40)} tree 0\n`), 10]);
  const objects = parseCatFileBatch(out);
  expect([...objects.get("c".repeat(40))!.data]).toEqual([...data]);
  expect(objects.get("d".repeat(40))!.type).toBe("tree");
  expect(() => parseCatFileBatch(enc.encode(`${"e".repeat(40)} missing\n`))).toThrow("missing");
});

test("a loose object is zlib of the type, size, NUL and the data", () => {
  const raw = inflateSync(looseObject({ type: "blob", data: new TextEncoder().encode("hi\n") }));
  expect(new TextDecoder().decode(raw)).toBe("blob 3\0hi\n");
});
