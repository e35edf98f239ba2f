import { copyFileSync, existsSync, mkdtempSync, renameSync, rmSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import type { Runner } from "../host/runner.ts";
import { applyLayer, type BlobStore } from "./oci/layer.ts";
import { NO_LIMITS, openLocal, unpackLayer } from "./oci/unpack.ts";
import { FlatTree, type Dir, type Leaf, type Meta, type Node } from "./oci/tree.ts";

/** What a debugfs script will create: for sizing the filesystem before it is made. */
export interface TreeStats {
  inodes: number;
  dataBytes: number;
}

const BLOCK = 4096;
const MiB = 1024 * 1024;
/** debugfs reads script lines into an 8 KiB buffer; longer lines would be split silently. */
const MAX_LINE = 8000;
const TYPE_BITS = { dir: 0o040000, file: 0o100000, symlink: 0o120000, fifo: 0o010000 } as const;

/** Quotes a path for a debugfs script: always absolute (never read as an option), `"` doubled. */
function q(path: string): string {
  return `"${path.replaceAll('"', '""')}"`;
}

function metaLines(path: string, type: keyof typeof TYPE_BITS, m: Meta): string[] {
  // Linux ignores symlink permissions; 0777 is what every tool writes.
  const mode = (TYPE_BITS[type] | (type === "symlink" ? 0o777 : m.mode & 0o7777)).toString(8);
  return [
    `sif ${q(path)} mode 0${mode}`,
    `sif ${q(path)} uid ${m.uid}`,
    `sif ${q(path)} gid ${m.gid}`,
    `sif ${q(path)} mtime @${Math.max(0, m.mtime)}`,
    ...(m.xattrs ?? []).map((x) => `ea_set -f ${q(x.blob)} ${q(path)} ${x.name}`),
  ];
}

function leafLines(path: string, name: string, parent: string, leaf: Leaf): string[] {
  switch (leaf.kind) {
    case "file":
      return [`write ${q(leaf.blob)} ${q(path)}`];
    case "symlink":
      return [`symlink ${q(path)} ${q(leaf.target)}`];
    case "fifo":
      // mknod links its argument literally into the cwd, so it must run inside the parent.
      return [`cd ${q(parent)}`, `mknod ${q(name)} p`, `cd "/"`];
  }
}

/** Turns a flattened tree into debugfs commands (parents first, directory metadata last) plus sizing stats. */
export function debugfsScript(tree: FlatTree): { lines: string[]; stats: TreeStats } {
  const lines: string[] = [];
  const stats: TreeStats = { inodes: 1, dataBytes: BLOCK };
  const firstPath = new Map<Leaf, { path: string; links: number }>();
  const lf = tree.root.children.get("lost+found");
  if (lf && lf.kind !== "dir") lines.push(`rmdir "/lost+found"`);

  const visit = (dir: Dir, path: string) => {
    for (const [name, node] of [...dir.children].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const child = `${path === "/" ? "" : path}/${name}`;
      if (node.kind === "dir") {
        if (!(child === "/lost+found")) lines.push(`mkdir ${q(child)}`);
        stats.inodes++;
        stats.dataBytes += BLOCK * Math.max(1, Math.ceil((node.children.size * 32) / BLOCK));
        visit(node, child);
        lines.push(...metaLines(child, "dir", node.meta));
        continue;
      }
      addLeaf(child, name, path, node);
    }
  };
  const addLeaf = (path: string, name: string, parent: string, node: Extract<Node, { kind: "leaf" }>) => {
    const seen = firstPath.get(node.leaf);
    if (seen) {
      seen.links++;
      lines.push(`ln ${q(seen.path)} ${q(path)}`);
      return;
    }
    firstPath.set(node.leaf, { path, links: 1 });
    stats.inodes++;
    if (node.leaf.kind === "file") stats.dataBytes += Math.ceil(node.leaf.size / BLOCK) * BLOCK;
    if (node.leaf.kind === "symlink" && node.leaf.target.length > 59) stats.dataBytes += BLOCK;
    lines.push(...leafLines(path, name, parent, node.leaf), ...metaLines(path, node.leaf.kind, node.leaf.meta));
  };

  visit(tree.root, "/");
  lines.push(...metaLines("/", "dir", tree.root.meta));
  for (const { path, links } of firstPath.values()) if (links > 1) lines.push(`sif ${q(path)} links_count ${links}`);
  const long = lines.find((l) => Buffer.byteLength(l) > MAX_LINE);
  if (long) throw new BangerError("invalid_argument", `path too long for the ext4 tools: ${long.slice(0, 120)}…`);
  return { lines, stats };
}

/** A filesystem size that fits the tree with room for metadata and the journal, rounded to MiB. */
export function defaultSize(stats: TreeStats): number {
  const need = stats.dataBytes * 1.15 + stats.inodes * 512 + 64 * MiB;
  return Math.ceil(need / MiB) * MiB;
}

/** Options for writing a tree into a new ext4 file. */
export interface WriteExt4Options {
  outPath: string;
  sizeBytes?: number;
  workDir: string;
  runner: Runner;
}

function checkSize(stats: TreeStats, sizeBytes: number | undefined): number {
  const size = sizeBytes ?? defaultSize(stats);
  const minimum = stats.dataBytes + stats.inodes * 256 + 16 * MiB;
  if (size < minimum) {
    throw new BangerError("invalid_argument", `an image of ${size} bytes cannot hold this tree (needs at least ${Math.ceil(minimum / MiB)} MiB)`, {
      hint: `Give a larger size or leave it out to use the default (${Math.ceil(defaultSize(stats) / MiB)} MiB).`,
    });
  }
  return size;
}

/** Moves the finished image into place; a rename when possible, a copy across filesystems. */
function moveInto(src: string, dst: string): void {
  try {
    renameSync(src, dst);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    copyFileSync(src, dst);
    unlinkSync(src);
  }
}

/**
 * Writes the tree into a new ext4 at outPath without root: mkfs.ext4, then one debugfs
 * script that creates every inode with its owner, mode and mtime, then e2fsck to verify.
 * The image is built in workDir and only moved to outPath once it checks clean.
 */
export async function writeExt4(tree: FlatTree, opts: WriteExt4Options): Promise<{ sizeBytes: number }> {
  if (existsSync(opts.outPath)) throw new BangerError("already_exists", `${opts.outPath} already exists; remove it or choose another path`);
  const { lines, stats } = debugfsScript(tree);
  const size = checkSize(stats, opts.sizeBytes);
  const tmp = mkdtempSync(join(opts.workDir, "ext4-"));
  try {
    const img = join(tmp, "rootfs.ext4");
    const script = join(tmp, "populate.debugfs");
    await Bun.write(script, lines.join("\n") + "\n");
    const inodes = Math.max(Math.ceil(size / 16384), Math.ceil(stats.inodes * 1.1) + 1024);
    await opts.runner.run(["mkfs.ext4", "-q", "-F", "-b", String(BLOCK), "-m", "0", "-N", String(inodes), "-E", "root_owner=0:0", img, `${size / 1024}k`]);
    const res = await opts.runner.run(["debugfs", "-w", "-f", script, img], { allowFailure: true });
    const errors = res.stderr.split("\n").filter((l) => l.trim() !== "" && !/^debugfs \d/.test(l));
    if (res.code !== 0 || errors.length) {
      const full = errors.some((l) => /Could not allocate|No free space|no free inodes/i.test(l));
      throw new BangerError(full ? "invalid_argument" : "internal", `writing the image with debugfs failed: ${errors.slice(0, 3).join(" | ")}`, {
        hint: full ? "The image is too small for its contents; give a larger size." : "See the daemon log.",
      });
    }
    const fsck = await opts.runner.run(["e2fsck", "-fn", img], { allowFailure: true });
    if (fsck.code !== 0) throw new BangerError("internal", `the new image failed e2fsck: ${fsck.stdout.trim().split("\n").slice(-3).join(" | ")}`);
    moveInto(img, opts.outPath);
    return { sizeBytes: size };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Makes an ext4 from one rootfs tarball (plain, gzip or zstd), e.g. the output of `mmdebstrap … rootfs.tar`. */
export async function ext4FromTar(opts: WriteExt4Options & { tarPath: string }): Promise<{ sizeBytes: number }> {
  const tree = new FlatTree();
  const blobDir = mkdtempSync(join(opts.workDir, "blobs-"));
  try {
    const blobs: BlobStore = { dir: blobDir, next: 0 };
    const unpacked = join(blobDir, "rootfs.tar");
    const file = openLocal(opts.tarPath);
    try {
      await unpackLayer(file, unpacked, opts.tarPath, NO_LIMITS, { bytes: 0, entries: 0 });
    } finally {
      file.close();
    }
    const tar = openLocal(unpacked);
    try {
      await applyLayer(tree, tar, opts.tarPath, blobs);
    } finally {
      tar.close();
    }
    return await writeExt4(tree, opts);
  } finally {
    rmSync(blobDir, { recursive: true, force: true });
  }
}
