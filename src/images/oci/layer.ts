import { closeSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import { BangerError } from "../../errors.ts";
import { tarEntries, type TarEntry } from "../tar.ts";
import type { SourceFile } from "./source.ts";
import type { FlatTree, Meta } from "./tree.ts";
import { NO_LIMITS, type ImportLimits, type ImportUsage } from "./unpack.ts";

/** Where regular-file contents go while the tree is built: numbered files in one private directory. */
export interface BlobStore {
  dir: string;
  next: number;
}

const COPY_CHUNK = 4 << 20;

/** Copies a member's data from the unpacked layer to a blob file; small files in one write (much faster for many files). */
async function copyOut(tar: SourceFile, e: TarEntry, blob: string): Promise<void> {
  if (e.size <= COPY_CHUNK) return void (await Bun.write(blob, tar.readAt(e.dataOffset, e.size)));
  const fd = openSync(blob, "w", 0o600);
  try {
    for (let at = 0; at < e.size; at += COPY_CHUNK) writeSync(fd, tar.readAt(e.dataOffset + at, Math.min(COPY_CHUNK, e.size - at)));
  } finally {
    closeSync(fd);
  }
}

/** Lists a layer's members, refusing once the import's entry cap is passed. */
function listEntries(tar: SourceFile, limits: ImportLimits, used: ImportUsage): TarEntry[] {
  const entries: TarEntry[] = [];
  for (const e of tarEntries((o, n) => tar.readAt(o, n), tar.size)) {
    if (++used.entries > limits.maxEntries) {
      throw new BangerError(
        "invalid_argument",
        `entry ${JSON.stringify(e.path)} is past the import cap of ${limits.maxEntries} entries (all layers together)`,
        {
          hint: "The image is crafted or very large; raise import_max_entries in the config if it is genuine.",
        },
      );
    }
    entries.push(e);
  }
  return entries;
}

const WHITEOUT = ".wh.";
const OPAQUE = ".wh..wh..opq";

function splitName(path: string): [string, string] {
  const trimmed = path.replace(/\/+$/, "");
  const slash = trimmed.lastIndexOf("/");
  return slash < 0 ? ["", trimmed] : [trimmed.slice(0, slash), trimmed.slice(slash + 1)];
}

/** Namespaces debugfs writes verbatim; others (e.g. POSIX ACLs, which need format conversion) are dropped. */
const XATTR_NAME = /^(security|user|trusted)\.[\x21-\x7e]{1,200}$/;

/** Most extended attributes one entry may carry (ext4 keeps them in one 4 KiB block anyway). */
const MAX_XATTRS = 64;

async function metaOf(e: TarEntry, blobs: BlobStore): Promise<Meta> {
  const meta: Meta = { mode: e.mode & 0o7777, uid: e.uid, gid: e.gid, mtime: e.mtime };
  const xattrs = Object.entries(e.xattrs);
  if (xattrs.length > MAX_XATTRS) {
    throw new BangerError(
      "invalid_argument",
      `entry ${JSON.stringify(e.path)} has ${xattrs.length} extended attributes; the most an entry may carry is ${MAX_XATTRS}`,
    );
  }
  for (const [name, value] of xattrs) {
    if (!XATTR_NAME.test(name)) continue;
    const blob = join(blobs.dir, String(blobs.next++));
    await Bun.write(blob, value);
    (meta.xattrs ??= []).push({ name, blob });
  }
  return meta;
}

/** Applies whiteouts first: per the OCI spec they only hide what lower layers made. */
function applyWhiteouts(tree: FlatTree, entries: TarEntry[]): void {
  for (const e of entries) {
    const [dir, base] = splitName(e.path);
    if (base === OPAQUE) tree.clearDir(dir);
    else if (base.startsWith(`${WHITEOUT}${WHITEOUT}`)) continue;
    else if (base.startsWith(WHITEOUT)) {
      const name = base.slice(WHITEOUT.length);
      if (name === "" || name === "." || name === "..") {
        throw new BangerError("invalid_argument", `whiteout ${JSON.stringify(e.path)} names no file`);
      }
      tree.remove(dir ? `${dir}/${name}` : name);
    }
  }
}

async function applyEntry(tree: FlatTree, e: TarEntry, tar: SourceFile, blobs: BlobStore): Promise<void> {
  const shown = JSON.stringify(e.path);
  switch (e.type) {
    case "dir":
      return tree.putDir(e.path, await metaOf(e, blobs));
    case "file": {
      tree.lookup(e.path.replace(/\/+$/, "") || "."); // validates the name before anything is written
      const blob = join(blobs.dir, String(blobs.next++));
      await copyOut(tar, e, blob); // the blob dir is private (0700)
      return tree.putLeaf(e.path, { kind: "file", meta: await metaOf(e, blobs), blob, size: e.size });
    }
    case "symlink":
      return tree.putLeaf(e.path, { kind: "symlink", meta: await metaOf(e, blobs), target: e.linkname });
    case "hardlink":
      return tree.link(e.path, e.linkname);
    case "fifo":
      return tree.putLeaf(e.path, { kind: "fifo", meta: await metaOf(e, blobs) });
    case "char":
    case "block":
      throw new BangerError("invalid_argument", `entry ${shown} is a ${e.type} device node; images may not carry device nodes`, {
        hint: "Remove device nodes from the image; the guest's devtmpfs provides /dev.",
      });
    default:
      throw new BangerError("invalid_argument", `entry ${shown} has unsupported tar type ${JSON.stringify(e.typeflag)}`);
  }
}

/** Applies one unpacked layer tar to the tree; errors name the entry and the layer. */
export async function applyLayer(
  tree: FlatTree,
  tar: SourceFile,
  label: string,
  blobs: BlobStore,
  limits: ImportLimits = NO_LIMITS,
  used: ImportUsage = { bytes: 0, entries: 0 },
): Promise<void> {
  try {
    const entries = listEntries(tar, limits, used);
    applyWhiteouts(tree, entries);
    for (const e of entries) {
      const base = splitName(e.path)[1];
      if (base.startsWith(WHITEOUT)) continue;
      await applyEntry(tree, e, tar, blobs);
    }
  } catch (err) {
    if (err instanceof BangerError) throw new BangerError(err.code, `${label}: ${err.message}`, { hint: err.hint, cause: err });
    throw err;
  }
}
