import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { BangerError } from "../../errors.ts";
import type { Runner } from "../../host/runner.ts";
import { writeExt4 } from "../ext4-from-tar.ts";
import { applyLayer, type BlobStore } from "./layer.ts";
import { selectImage, type LayerRef, type OciImageConfig, type SelectedImage } from "./manifest.ts";
import { NO_LIMITS, openLocal, unpackLayer, type ImportLimits, type ImportUsage } from "./unpack.ts";
import { pullToLayout } from "./registry.ts";
import { openImageSource, type ImageSource } from "./source.ts";
import { FlatTree } from "./tree.ts";

/** A file, directory or symlink banger adds on top of the image (guest agent, boot glue, sshd drop-in). */
export interface ExtraEntry {
  /** Path inside the image; a leading "/" is allowed here. */
  path: string;
  type?: "file" | "dir" | "symlink";
  content?: string | Uint8Array;
  fromFile?: string;
  /** Symlink target. */
  target?: string;
  /** Permission bits (setuid etc. included); default 0644 for files, 0755 for directories. */
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
}

/** Inputs of `importOci`. */
export interface ImportOciOptions {
  /** An oci-layout directory, a docker-save or oci-archive tarball, or registry://HOST/NAME:TAG. */
  source: string;
  /** Tag or digest when the source holds several images. */
  ref?: string;
  /** The ext4 to create; must not exist yet. */
  outPath: string;
  sizeBytes?: number;
  extraEntries?: ExtraEntry[];
  /** Scratch space (file contents, the image being built); emptied again before returning. */
  workDir: string;
  runner: Runner;
  /** HTTP client for `registry://` sources; defaults to the global fetch. */
  fetch?: (url: string, init?: RequestInit) => Promise<Response>;
  /** Called with a short line per stage, for live progress. */
  onProgress?: (line: string) => void;
  /** Caps on unpacked bytes and entries; none when absent (trusted inputs). */
  limits?: ImportLimits;
}

/** What `importOci` made. */
export interface ImportOciResult {
  rootfs: string;
  /** Manifest digest (OCI sources) or image id, the config's digest (docker-save sources). */
  digest: string;
  config: OciImageConfig;
  layers: number;
  sizeBytes: number;
}

/** Unpacks a layer to `dest` (streaming, capped) and checks both of its digests. */
async function layerTar(
  src: ImageSource,
  layer: SelectedImage["layers"][number],
  label: string,
  dest: string,
  limits: ImportLimits,
  used: ImportUsage,
): Promise<void> {
  const file = src.open(layer.path);
  try {
    const got = await unpackLayer(file, dest, label, limits, used);
    if (layer.digest && got.blobDigest !== layer.digest) throw new BangerError("invalid_argument", `${label} is corrupt: it does not hash to its digest`);
    if (layer.diffId && got.tarDigest !== layer.diffId) {
      throw new BangerError("invalid_argument", `${label} does not match the diff_id ${layer.diffId} in the image config`);
    }
  } finally {
    file.close();
  }
}

/** Unpacks and applies one layer; the unpacked tar is deleted again at once. */
async function importLayer(
  src: ImageSource,
  layer: LayerRef,
  label: string,
  ctx: { tree: FlatTree; blobs: BlobStore; scratch: string; limits: ImportLimits; used: ImportUsage },
): Promise<void> {
  const dest = join(ctx.scratch, "layer.tar");
  try {
    await layerTar(src, layer, label, dest, ctx.limits, ctx.used);
    const tar = openLocal(dest);
    try {
      await applyLayer(ctx.tree, tar, label, ctx.blobs, ctx.limits, ctx.used);
    } finally {
      tar.close();
    }
  } finally {
    rmSync(dest, { force: true });
  }
}

/** Adds banger's own files after the image layers, through the same safety checks. */
export async function applyExtras(tree: FlatTree, extras: ExtraEntry[], blobs: BlobStore): Promise<void> {
  for (const x of extras) {
    const path = x.path.replace(/^\/+/, "");
    const meta = { uid: x.uid ?? 0, gid: x.gid ?? 0, mtime: x.mtime ?? Math.floor(Date.now() / 1000) };
    const type = x.type ?? "file";
    if (type === "dir") tree.putDir(path, { ...meta, mode: x.mode ?? 0o755 });
    else if (type === "symlink") {
      if (!x.target) throw new BangerError("invalid_argument", `extra symlink ${x.path} has no target`);
      tree.putLeaf(path, { kind: "symlink", meta: { ...meta, mode: 0o777 }, target: x.target });
    } else {
      const data = x.fromFile !== undefined ? await Bun.file(x.fromFile).bytes() : x.content;
      if (data === undefined) throw new BangerError("invalid_argument", `extra file ${x.path} has neither content nor fromFile`);
      const blob = join(blobs.dir, String(blobs.next++));
      await Bun.write(blob, data);
      tree.putLeaf(path, {
        kind: "file",
        meta: { ...meta, mode: x.mode ?? 0o644 },
        blob,
        size: typeof data === "string" ? Buffer.byteLength(data) : data.length,
      });
    }
  }
}

/**
 * Imports an OCI image into a new ext4 rootfs without root: layers are flattened in memory
 * (whiteouts, opaque dirs, hard links), unsafe entries are rejected before anything is
 * written, and the file appears at outPath only once complete and fsck-clean.
 */
export async function importOci(opts: ImportOciOptions): Promise<ImportOciResult> {
  const say = opts.onProgress ?? (() => {});
  if (existsSync(opts.outPath)) throw new BangerError("already_exists", `${opts.outPath} already exists; remove it or choose another path`);
  const scratch = mkdtempSync(join(opts.workDir, "oci-import-"));
  let src: ImageSource | undefined;
  try {
    if (opts.source.startsWith("registry://")) {
      const ref = await pullToLayout(opts.source, join(scratch, "pulled"), opts.fetch, opts.limits?.maxBytes);
      say(`pulled ${ref.display}`);
    }
    src = openImageSource(opts.source.startsWith("registry://") ? join(scratch, "pulled") : opts.source);
    const image = await selectImage(src, opts.ref);
    say(`image ${image.digest}: ${image.layers.length} layers (${src.kind})`);
    const tree = new FlatTree();
    const blobs: BlobStore = { dir: mkdtempSync(join(scratch, "files-")), next: 0 };
    const ctx = { tree, blobs, scratch, limits: opts.limits ?? NO_LIMITS, used: { bytes: 0, entries: 0 } };
    for (const [i, layer] of image.layers.entries()) {
      const label = `layer ${i + 1}/${image.layers.length} (${layer.digest ?? layer.path})`;
      const started = performance.now();
      await importLayer(src, layer, label, ctx);
      say(`${label} applied in ${Math.round(performance.now() - started)} ms`);
    }
    await applyExtras(tree, opts.extraEntries ?? [], blobs);
    const { sizeBytes } = await writeExt4(tree, { outPath: opts.outPath, sizeBytes: opts.sizeBytes, workDir: scratch, runner: opts.runner });
    say(`wrote ${opts.outPath} (${Math.round(sizeBytes / 1048576)} MiB)`);
    return { rootfs: opts.outPath, digest: image.digest, config: image.config, layers: image.layers.length, sizeBytes };
  } finally {
    src?.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}
