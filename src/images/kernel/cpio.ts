/** A minimal cpio "newc" writer: the archive format of a Linux initramfs. */
import { concatBytes } from "../tar.ts";

/** One archive member; directories and symlinks carry no data (a symlink's target is its data). */
export type CpioEntry =
  | { path: string; type: "dir"; mode?: number }
  | { path: string; type: "file"; data: Uint8Array | string; mode?: number }
  | { path: string; type: "symlink"; target: string };

const enc = new TextEncoder();
const hex = (n: number) => n.toString(16).padStart(8, "0");
const pad4 = (n: number) => (4 - (n % 4)) % 4;

function member(ino: number, mode: number, name: string, data: Uint8Array): Uint8Array[] {
  const nameBytes = enc.encode(`${name}\0`);
  const fields = [ino, mode, 0, 0, mode & 0o040000 ? 2 : 1, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0];
  const header = enc.encode(`070701${fields.map(hex).join("")}`);
  return [header, nameBytes, new Uint8Array(pad4(header.length + nameBytes.length)), data, new Uint8Array(pad4(data.length))];
}

/** Serialises entries (parents before children) into one newc archive ending with the trailer. */
export function writeCpio(entries: CpioEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  entries.forEach((e, i) => {
    const name = e.path.replace(/^\/+/, "");
    if (e.type === "dir") parts.push(...member(i + 1, 0o040000 | (e.mode ?? 0o755), name, new Uint8Array(0)));
    else if (e.type === "symlink") parts.push(...member(i + 1, 0o120777, name, enc.encode(e.target)));
    else parts.push(...member(i + 1, 0o100000 | (e.mode ?? 0o644), name, typeof e.data === "string" ? enc.encode(e.data) : e.data));
  });
  parts.push(...member(entries.length + 1, 0, "TRAILER!!!", new Uint8Array(0)));
  return concatBytes(parts);
}
