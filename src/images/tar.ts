import { BangerError } from "../errors.ts";

/** The kinds of tar entries banger distinguishes; everything else is "other". */
export type TarType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo" | "other";

/** One tar member: header fields resolved (PAX and GNU long names applied) plus where its data lives. */
export interface TarEntry {
  path: string;
  type: TarType;
  /** The raw typeflag, for error messages about unsupported kinds. */
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size: number;
  linkname: string;
  /** Byte offset of the member's data in the archive. */
  dataOffset: number;
  /** Extended attributes from PAX `SCHILY.xattr.*` records (e.g. security.capability), raw bytes. */
  xattrs: Record<string, Uint8Array>;
}

/** Random access to an archive's bytes: a buffer in memory or a file read at offsets. */
export type ReadAt = (offset: number, length: number) => Uint8Array;

const TYPES: Record<string, TarType> = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "1": "hardlink",
  "2": "symlink",
  "3": "char",
  "4": "block",
  "5": "dir",
  "6": "fifo",
};
const XATTR = "SCHILY.xattr.";
const utf8 = new TextDecoder("utf-8", { fatal: true });
const lossy = new TextDecoder("utf-8");

/** Decodes a name; names that are not UTF-8 cannot be written faithfully, so they are rejected. */
function decodeName(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new BangerError("invalid_argument", `tar entry name ${JSON.stringify(lossy.decode(bytes))} is not valid UTF-8`, {
      hint: "Rename the file in the image to a UTF-8 name and rebuild it.",
    });
  }
}

function cstr(block: Uint8Array, start: number, len: number): Uint8Array {
  const field = block.subarray(start, start + len);
  const nul = field.indexOf(0);
  return nul < 0 ? field : field.subarray(0, nul);
}

function badNumber(what: string, raw: string, at: number): never {
  throw new BangerError(
    "invalid_argument",
    `not a valid tar archive: the ${what} field of the header at byte ${at} is ${JSON.stringify(raw)}, not a non-negative number`,
    {
      hint: "The archive is corrupt or crafted; rebuild or re-download it.",
    },
  );
}

/** Checks a header number: tar numbers are whole, non-negative and exact in a double. */
function checked(v: number, what: string, raw: string, at: number): number {
  if (!Number.isSafeInteger(v) || v < 0) badNumber(what, raw, at);
  return v;
}

/** Reads an octal field, or GNU base-256 when the high bit is set (large sizes and ids); negative or garbled values are rejected. */
function num(block: Uint8Array, start: number, len: number, what: string, at: number): number {
  const field = block.subarray(start, start + len);
  if (field[0]! & 0x80) {
    // 0xff starts a negative base-256 number (two's complement), which no field may hold.
    if (field[0] === 0xff) badNumber(what, "negative base-256", at);
    let v = field[0]! & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + field[i]!;
    return checked(v, what, "base-256", at);
  }
  const text = lossy.decode(cstr(block, start, len)).trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) badNumber(what, text, at);
  return checked(parseInt(text, 8), what, text, at);
}

/** Reads a decimal PAX value (size, uid, gid, mtime); an mtime may carry a fraction or predate 1970 (kept as 0). */
function paxNumber(text: string, what: string, at: number): number {
  const ok = what === "mtime" ? /^-?\d+(\.\d+)?$/.test(text) : /^\d+$/.test(text);
  if (!ok) badNumber(`PAX ${what}`, text, at);
  const v = Math.floor(Number(text));
  return checked(what === "mtime" ? Math.max(0, v) : v, `PAX ${what}`, text, at);
}

function checksumOk(block: Uint8Array): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : block[i]!;
  const text = lossy.decode(cstr(block, 148, 8)).trim();
  return /^[0-7]+$/.test(text) && sum === parseInt(text, 8);
}

/** Parses PAX extended-header records ("len key=value\n"); values stay bytes (xattrs are binary). */
function parsePax(data: Uint8Array): Record<string, Uint8Array> {
  const out: Record<string, Uint8Array> = {};
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space < 0) break;
    const len = parseInt(lossy.decode(data.subarray(pos, space)), 10);
    if (!(len > 0)) break;
    const record = data.subarray(space + 1, pos + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq > 0) out[lossy.decode(record.subarray(0, eq))] = record.subarray(eq + 1);
    pos += len;
  }
  return out;
}

/** PAX values that override header fields, already decoded and checked. */
interface PaxOverrides {
  path?: string;
  linkpath?: string;
  size?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
}

function overrides(raw: Record<string, Uint8Array>, at: number): PaxOverrides {
  const ext: PaxOverrides = {};
  if (raw.path) ext.path = decodeName(raw.path);
  if (raw.linkpath) ext.linkpath = decodeName(raw.linkpath);
  for (const k of ["size", "uid", "gid", "mtime"] as const) if (raw[k]?.length) ext[k] = paxNumber(lossy.decode(raw[k]), k, at);
  return ext;
}

function xattrsOf(raw: Record<string, Uint8Array>): Record<string, Uint8Array> {
  return Object.fromEntries(
    Object.entries(raw)
      .filter(([k]) => k.startsWith(XATTR))
      .map(([k, v]) => [k.slice(XATTR.length), v]),
  );
}

/** The state a tar walk carries between headers: pending PAX records and GNU long names. */
interface Pending {
  pax: Record<string, Uint8Array>;
  globalPax: Record<string, Uint8Array>;
  longName?: string;
  longLink?: string;
}

function entryOf(block: Uint8Array, at: number, size: number, ext: PaxOverrides, raw: Record<string, Uint8Array>, p: Pending): TarEntry {
  const typeflag = String.fromCharCode(block[156]!);
  const magic = lossy.decode(block.subarray(257, 262));
  const prefix = magic === "ustar" ? decodeName(cstr(block, 345, 155)) : "";
  const name = decodeName(cstr(block, 0, 100));
  return {
    path: ext.path ?? p.longName ?? (prefix ? `${prefix}/${name}` : name),
    type: TYPES[typeflag] ?? "other",
    typeflag,
    mode: num(block, 100, 8, "mode", at) & 0o7777,
    uid: ext.uid ?? num(block, 108, 8, "uid", at),
    gid: ext.gid ?? num(block, 116, 8, "gid", at),
    mtime: ext.mtime ?? num(block, 136, 12, "mtime", at),
    size: TYPES[typeflag] === "file" ? size : 0,
    linkname: ext.linkpath ?? p.longLink ?? decodeName(cstr(block, 157, 100)),
    dataOffset: at + 512,
    xattrs: xattrsOf(raw),
  };
}

/** Records a PAX or GNU long-name header into `p`; false when the header is an ordinary member. */
function absorbMeta(typeflag: string, data: () => Uint8Array, size: number, p: Pending): boolean {
  if (typeflag === "x") p.pax = { ...p.pax, ...parsePax(data()) };
  else if (typeflag === "g") p.globalPax = { ...p.globalPax, ...parsePax(data()) };
  else if (typeflag === "L") p.longName = decodeName(cstr(data(), 0, size));
  else if (typeflag === "K") p.longLink = decodeName(cstr(data(), 0, size));
  else return false;
  return true;
}

/** Most a PAX or GNU long-name header may hold; real ones are a few KiB at most. */
const MAX_META_BYTES = 1 << 20;

/**
 * Iterates the members of a tar archive of `total` bytes; stops at the end-of-archive block.
 * Every header moves the position forward by at least one block, so no input can loop.
 */
export function* tarEntries(readAt: ReadAt, total: number): Generator<TarEntry> {
  let pos = 0;
  const p: Pending = { pax: {}, globalPax: {} };
  while (pos + 512 <= total) {
    const block = readAt(pos, 512);
    if (block.every((b) => b === 0)) return;
    if (!checksumOk(block)) throw new BangerError("invalid_argument", `not a tar archive: bad header checksum at byte ${pos}`);
    const at = pos;
    const typeflag = String.fromCharCode(block[156]!);
    const size = num(block, 124, 12, "size", at);
    const raw = { ...p.globalPax, ...p.pax };
    const ext = overrides(raw, at);
    const entrySize = ext.size !== undefined && !"xgLK".includes(typeflag) ? ext.size : size;
    pos = at + 512 + Math.ceil(entrySize / 512) * 512;
    if (!(pos > at) || pos > total)
      throw new BangerError("invalid_argument", `tar archive is truncated at byte ${total} (the header at byte ${at} claims ${entrySize} bytes of data)`);
    if ("xgLK".includes(typeflag) && size > MAX_META_BYTES) {
      throw new BangerError(
        "invalid_argument",
        `tar header at byte ${at} carries ${size} bytes of extended attributes or names; the limit is ${MAX_META_BYTES}`,
      );
    }
    if (absorbMeta(typeflag, () => readAt(at + 512, size), size, p)) continue;
    yield entryOf(block, at, entrySize, ext, raw, p);
    p.pax = {};
    p.longName = undefined;
    p.longLink = undefined;
  }
}

/** A member to write with `writeTar`; tests use it to build fixture layers and archives. */
export interface TarInput {
  path: string;
  type?: TarType;
  data?: Uint8Array | string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string;
  xattrs?: Record<string, Uint8Array>;
}

const FLAGS: Record<TarType, string> = {
  file: "0",
  dir: "5",
  symlink: "2",
  hardlink: "1",
  char: "3",
  block: "4",
  fifo: "6",
  other: "0",
};
const enc = new TextEncoder();

function header(path: Uint8Array, e: TarInput, size: number, flag: string, linkname: Uint8Array): Uint8Array {
  const b = new Uint8Array(512);
  const put = (bytes: Uint8Array, at: number, len: number) => b.set(bytes.subarray(0, len), at);
  const oct = (v: number, at: number, len: number) => put(enc.encode(v.toString(8).padStart(len - 1, "0")), at, len - 1);
  put(path, 0, 100);
  oct(e.mode ?? (flag === "5" ? 0o755 : 0o644), 100, 8);
  oct(e.uid ?? 0, 108, 8);
  oct(e.gid ?? 0, 116, 8);
  oct(size, 124, 12);
  oct(e.mtime ?? 1_700_000_000, 136, 12);
  b[156] = flag.charCodeAt(0);
  put(linkname, 157, 100);
  put(enc.encode("ustar\x0000"), 257, 8);
  b.fill(32, 148, 156);
  oct(
    b.reduce((s, x) => s + x, 0),
    148,
    7,
  );
  return b;
}

function padded(data: Uint8Array): Uint8Array[] {
  const pad = (512 - (data.length % 512)) % 512;
  return [data, new Uint8Array(pad)];
}

/** Writes a ustar archive, with PAX headers for names or link targets too long for ustar. */
export function writeTar(entries: TarInput[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    const type = e.type ?? "file";
    const data = typeof e.data === "string" ? enc.encode(e.data) : (e.data ?? new Uint8Array());
    const path = enc.encode(e.path);
    const link = enc.encode(e.linkname ?? "");
    const xattrs = Object.entries(e.xattrs ?? {});
    if (path.length > 99 || link.length > 99 || xattrs.length) {
      const rec = (k: string, v: Uint8Array) => {
        const body = [...enc.encode(` ${k}=`), ...v, 10];
        let len = body.length + 1;
        while (String(len).length + body.length !== len) len++;
        return [...enc.encode(String(len)), ...body];
      };
      const records = [...rec("path", path), ...(link.length ? rec("linkpath", link) : [])];
      for (const [k, v] of xattrs) records.push(...rec(`${XATTR}${k}`, v));
      const pax = new Uint8Array(records);
      parts.push(header(enc.encode("PaxHeader"), { path: "PaxHeader" }, pax.length, "x", new Uint8Array()), ...padded(pax));
    }
    const size = type === "file" ? data.length : 0;
    parts.push(header(path, e, size, FLAGS[type], link));
    if (size) parts.push(...padded(data));
  }
  parts.push(new Uint8Array(1024));
  return concatBytes(parts);
}

/** Joins byte arrays into one. */
export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Writes a header's checksum after its fields were edited (tests craft broken headers this way). */
export function fixChecksum(h: Uint8Array): void {
  h.fill(32, 148, 156);
  const sum = h.reduce((s, x) => s + x, 0);
  h.set(enc.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
}

/** A ReadAt over a buffer already in memory. */
export function bufferReader(buf: Uint8Array): ReadAt {
  return (offset, length) => buf.subarray(offset, offset + length);
}
