import { join } from "node:path";
import { BangerError } from "../../errors.ts";
import { bufferReader, tarEntries, type TarEntry } from "../tar.ts";
import type { FlatTree, Meta } from "./tree.ts";

/** Where regular-file contents go while the tree is built: numbered files in one private directory. */
export interface BlobStore {
  dir: string;
  next: number;
}

/** Gunzips or un-zstds a layer by its magic bytes; a plain tar passes through. */
export function decompressLayer(blob: Uint8Array, label: string): Uint8Array {
  try {
    if (blob[0] === 0x1f && blob[1] === 0x8b) return Bun.gunzipSync(blob as Uint8Array<ArrayBuffer>);
    if (blob[0] === 0x28 && blob[1] === 0xb5 && blob[2] === 0x2f && blob[3] === 0xfd) return Bun.zstdDecompressSync(blob);
  } catch (err) {
    throw new BangerError("invalid_argument", `${label} could not be decompressed: ${(err as Error).message}`, { cause: err });
  }
  return blob;
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

async function metaOf(e: TarEntry, blobs: BlobStore): Promise<Meta> {
  const meta: Meta = { mode: e.mode & 0o7777, uid: e.uid, gid: e.gid, mtime: e.mtime };
  for (const [name, value] of Object.entries(e.xattrs)) {
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

async function applyEntry(tree: FlatTree, e: TarEntry, data: Uint8Array, blobs: BlobStore): Promise<void> {
  const shown = JSON.stringify(e.path);
  switch (e.type) {
    case "dir":
      return tree.putDir(e.path, await metaOf(e, blobs));
    case "file": {
      tree.lookup(e.path.replace(/\/+$/, "") || "."); // validates the name before anything is written
      const blob = join(blobs.dir, String(blobs.next++));
      // Bun.write is ~20x faster than writeFileSync for many small files here; the blob dir is private (0700).
      await Bun.write(blob, data.subarray(e.dataOffset, e.dataOffset + e.size));
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

/** Applies one decompressed layer tar to the tree; errors name the entry and the layer. */
export async function applyLayer(tree: FlatTree, tar: Uint8Array, label: string, blobs: BlobStore): Promise<void> {
  try {
    const entries = [...tarEntries(bufferReader(tar), tar.length)];
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
