/**
 * A files-only sync's payload, made on the host: one tar with the changed working-tree files of
 * the snapshot, the snapshot's new git objects as loose objects (zlib, as git writes them), the
 * synced ref and the sync record. The guest only unpacks it, so no git process runs there, and its
 * object store still holds everything a later pack or diff needs (the synced commit and its trees).
 */
import { deflateSync } from "node:zlib";
import { writeTar, type TarInput } from "../images/tar.ts";
import { SYNCED_FILE, SYNCED_REF } from "./prepare.ts";
import type { HostSnapshot } from "./hostsnap.ts";

/** One path of `git diff-tree -r -z --no-renames` raw output. */
export interface RawChange {
  newMode: string;
  newId: string;
  status: string;
  path: string;
}

/** Parses raw diff-tree output (":old new oldid newid status\0path\0" per change). */
export function parseRawChanges(out: string): RawChange[] {
  const parts = out.split("\0");
  const changes: RawChange[] = [];
  for (let i = 0; i + 1 < parts.length; i += 2) {
    const meta = parts[i]!.replace(/^:/, "").split(" ");
    if (meta.length < 5) continue;
    changes.push({ newMode: meta[1]!, newId: meta[3]!, status: meta[4]!, path: parts[i + 1]! });
  }
  return changes;
}

/** A git object as `cat-file --batch` gives it. */
export interface GitObject {
  type: string;
  data: Uint8Array;
}

/** Parses `git cat-file --batch` output into objects by id. */
export function parseCatFileBatch(out: Uint8Array): Map<string, GitObject> {
  const objects = new Map<string, GitObject>();
  const dec = new TextDecoder();
  let at = 0;
  while (at < out.length) {
    const nl = out.indexOf(10, at);
    if (nl < 0) break;
    const [id, type, size] = dec.decode(out.subarray(at, nl)).split(" ");
    if (type === "missing" || !size) throw new Error(`git cat-file: ${id} is missing`);
    const n = Number(size);
    objects.set(id!, { type: type!, data: out.slice(nl + 1, nl + 1 + n) });
    at = nl + 1 + n + 1;
  }
  return objects;
}

/** A loose object file's bytes: zlib of "<type> <size>\0<data>". */
export function looseObject(o: GitObject): Uint8Array {
  const head = new TextEncoder().encode(`${o.type} ${o.data.length}\0`);
  const raw = new Uint8Array(head.length + o.data.length);
  raw.set(head);
  raw.set(o.data, head.length);
  return deflateSync(raw);
}

/** The working-tree entry for a changed path, or null for one that only goes away (or a submodule, which this path does not carry). */
function workEntry(c: RawChange, objects: Map<string, GitObject>, mtime: number): TarInput | null | "unsupported" {
  if (c.status === "D") return null;
  if (c.newMode === "160000") return "unsupported";
  const blob = objects.get(c.newId);
  if (!blob) return "unsupported";
  if (c.newMode === "120000") return { path: c.path, type: "symlink", linkname: new TextDecoder().decode(blob.data), mtime };
  return { path: c.path, data: blob.data, mode: c.newMode === "100755" ? 0o755 : 0o644, mtime };
}

/**
 * The tar for a files-only sync, or null when a change is one this path does not carry
 * (a submodule). `objects` holds the snapshot's new objects and every changed path's blob.
 */
export function filesPayload(snap: HostSnapshot, changes: RawChange[], newIds: string[], objects: Map<string, GitObject>): Uint8Array | null {
  const mtime = Math.floor(Date.now() / 1000);
  const entries: TarInput[] = [];
  for (const c of changes) {
    const e = workEntry(c, objects, mtime);
    if (e === "unsupported") return null;
    if (e) entries.push(e);
  }
  for (const id of newIds) {
    const o = objects.get(id);
    if (o) entries.push({ path: `.git/objects/${id.slice(0, 2)}/${id.slice(2)}`, data: looseObject(o), mode: 0o444, mtime });
  }
  entries.push({ path: `.git/${SYNCED_REF}`, data: `${snap.commit}\n`, mtime });
  entries.push({ path: SYNCED_FILE, data: `${snap.commit} ${snap.tree} ${snap.staged}\n`, mtime });
  return writeTar(entries);
}
