import { expect, test } from "bun:test";
import { BangerError } from "../errors.ts";
import { bufferReader, fixChecksum, tarEntries, writeTar } from "./tar.ts";

const entries = (buf: Uint8Array) => [...tarEntries(bufferReader(buf), buf.length)];

test("round-trips names, types, owners, modes and PAX long names and xattrs", () => {
  const long = "a/".repeat(80) + "file";
  const tar = writeTar([
    { path: "dir/", type: "dir", mode: 0o1777, uid: 1000, gid: 1001, mtime: 1234567890 },
    { path: long, data: "hello", mode: 0o4755, xattrs: { "user.k": new Uint8Array([0, 255]) } },
    { path: "ln", type: "symlink", linkname: "b/".repeat(70) + "target" },
    { path: "hl", type: "hardlink", linkname: "dir/x" },
    { path: "p", type: "fifo" },
  ]);
  const got = entries(tar);
  expect(got.map((e) => [e.path, e.type])).toEqual([
    ["dir/", "dir"],
    [long, "file"],
    ["ln", "symlink"],
    ["hl", "hardlink"],
    ["p", "fifo"],
  ]);
  expect(got[0]).toMatchObject({ mode: 0o1777, uid: 1000, gid: 1001, mtime: 1234567890 });
  expect(got[1]).toMatchObject({ mode: 0o4755, size: 5 });
  expect(new TextDecoder().decode(tar.subarray(got[1]!.dataOffset, got[1]!.dataOffset + 5))).toBe("hello");
  expect([...got[1]!.xattrs["user.k"]!]).toEqual([0, 255]);
  expect(got[2]!.linkname).toBe("b/".repeat(70) + "target");
});

test("reads GNU long names and base-256 numbers", () => {
  const name = "x".repeat(150);
  const longHeader = writeTar([{ path: "././@LongLink", data: name + "\0" }]).slice(0, 1024);
  longHeader[156] = "L".charCodeAt(0);
  const body = writeTar([{ path: "short", data: "z", uid: 5 }]);
  const hdr = body.subarray(0, 512);
  hdr.fill(0, 108, 116);
  hdr[108] = 0x80;
  hdr[115] = 0x02; // uid 2 in base-256
  fixChecksum(longHeader.subarray(0, 512));
  fixChecksum(hdr);
  const got = entries(new Uint8Array([...longHeader, ...body]));
  expect(got).toHaveLength(1);
  expect(got[0]).toMatchObject({ path: name, uid: 2, size: 1 });
});

test("rejects a corrupt header and a truncated archive", () => {
  const tar = writeTar([{ path: "f", data: "x".repeat(2000) }]);
  const bad = tar.slice();
  bad[0] = 0x41;
  expect(() => entries(bad)).toThrow(BangerError);
  expect(() => entries(tar.slice(0, 1024))).toThrow(/truncated/);
});

/** A one-member archive whose size field is replaced by `size` (octal text or raw bytes). */
function withSize(size: string | number[]): Uint8Array {
  const tar = writeTar([{ path: "evil", data: "x".repeat(600) }]);
  const hdr = tar.subarray(0, 512);
  hdr.fill(0, 124, 136);
  if (typeof size === "string") hdr.set(new TextEncoder().encode(size), 124);
  else hdr.set(size, 124);
  fixChecksum(hdr);
  return tar;
}

test("rejects a negative octal size instead of looping on one header", () => {
  const tar = withSize("-0001000");
  expect(tar.length).toBeLessThan(3000);
  expect(() => entries(tar)).toThrow(/size field of the header at byte 0 is "-0001000"/);
});

test("rejects negative and garbled base-256 and octal sizes", () => {
  expect(() => entries(withSize([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0x00]))).toThrow(/negative base-256/);
  expect(() => entries(withSize([0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]))).toThrow(/not a non-negative number/);
  expect(() => entries(withSize("12x4"))).toThrow(/"12x4"/);
});

test("rejects negative, fractional and non-numeric PAX sizes", () => {
  for (const bad of ["-512", "NaN", "Infinity", "1e3", "1.5", ""]) {
    const pax = `size=${bad}\n`;
    const record = `${pax.length + 3} ${pax}`;
    const fixed = `${record.length} ${pax}`;
    const head = writeTar([{ path: "PaxHeader", data: fixed }]).slice(0, 1024);
    head[156] = "x".charCodeAt(0);
    fixChecksum(head.subarray(0, 512));
    const body = writeTar([{ path: "f", data: "y" }]);
    const tar = new Uint8Array([...head, ...body]);
    if (bad === "")
      expect(entries(tar)).toHaveLength(1); // an empty value means "no override"
    else expect(() => entries(tar)).toThrow(/PAX size/);
  }
});

test("every header advances: a long run of crafted headers ends quickly", () => {
  const blocks = new Uint8Array(512 * 2000);
  const one = withSize("0").subarray(0, 512);
  for (let i = 0; i < 2000; i++) blocks.set(one, i * 512);
  expect(entries(blocks)).toHaveLength(2000);
});
