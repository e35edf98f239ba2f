import { closeSync, existsSync, fstatSync, openSync, readSync, realpathSync, statSync } from "node:fs";
import { join, sep } from "node:path";
import { BangerError } from "../../errors.ts";
import { tarEntries, type ReadAt } from "../tar.ts";
import { safeParts } from "./tree.ts";

/** The three on-disk forms of an image that `image import` accepts. */
export type SourceKind = "oci-layout" | "oci-archive" | "docker-archive";

/** One file of an image source, read at offsets so layers never have to sit in memory whole. */
export interface SourceFile {
  size: number;
  readAt(offset: number, length: number): Uint8Array;
  close(): void;
}

/** Most bytes `read` loads whole: indexes, manifests and configs are a few KiB. */
export const MAX_METADATA_BYTES = 16 * 1024 * 1024;

/** Read access to the files of an image source, whether a directory or a tarball. */
export interface ImageSource {
  kind: SourceKind;
  /** Reads a small file (index, manifest, config) whole; paths are checked to stay inside. */
  read(rel: string): Promise<Uint8Array>;
  /** Opens a file of any size (a layer) for reading at offsets. */
  open(rel: string): SourceFile;
  has(rel: string): boolean;
  close(): void;
}

function insidePath(rel: string): string {
  return safeParts(rel, "image source file").join("/");
}

/** OCI wins when both are present: newer `docker save` writes an OCI layout plus manifest.json. */
function kindOf(has: (rel: string) => boolean): "oci" | "docker" | undefined {
  if (has("oci-layout") && has("index.json")) return "oci";
  if (has("manifest.json")) return "docker";
  return undefined;
}

function tooBig(rel: string, size: number): never {
  throw new BangerError(
    "invalid_argument",
    `image file ${rel} is ${size} bytes; metadata files (index, manifest, config) may be at most ${MAX_METADATA_BYTES}`,
    {
      hint: "The image is malformed or crafted; re-export it with skopeo, docker or podman.",
    },
  );
}

/** Reads `length` bytes at `offset` of an open file, looping over short reads. */
export function readFd(fd: number, offset: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  let at = 0;
  while (at < length) {
    const n = readSync(fd, buf, at, length - at, offset + at);
    if (n === 0) break;
    at += n;
  }
  return at === length ? buf : buf.subarray(0, at);
}

function notAnImage(path: string): never {
  throw new BangerError("invalid_argument", `${path} is not an OCI layout, oci-archive or docker-save tarball (no index.json + oci-layout, no manifest.json)`, {
    hint: "Pass a directory made by `skopeo copy … oci:DIR`, or a tarball from `docker save` or `podman save --format oci-archive`.",
  });
}

/** Reads files from an oci-layout directory, refusing paths (or symlinks) that lead outside it. */
function dirSource(root: string): ImageSource {
  const realRoot = realpathSync(root);
  const resolve = (rel: string) => join(realRoot, insidePath(rel));
  const has = (rel: string) => existsSync(resolve(rel));
  const kind = kindOf(has) ?? notAnImage(root);
  const inside = (rel: string): string => {
    const path = resolve(rel);
    if (!existsSync(path)) throw new BangerError("not_found", `${root} has no file ${rel}`);
    const real = realpathSync(path);
    if (!real.startsWith(realRoot + sep)) throw new BangerError("invalid_argument", `${root}: ${rel} is a symlink that leads outside the image directory`);
    return real;
  };
  return {
    kind: kind === "oci" ? "oci-layout" : "docker-archive",
    has,
    async read(rel) {
      const real = inside(rel);
      const size = statSync(real).size;
      if (size > MAX_METADATA_BYTES) tooBig(rel, size);
      return Bun.file(real).bytes();
    },
    open(rel) {
      const fd = openSync(inside(rel), "r");
      return { size: fstatSync(fd).size, readAt: (offset, length) => readFd(fd, offset, length), close: () => closeSync(fd) };
    },
    close() {},
  };
}

interface Member {
  offset: number;
  size: number;
  link?: string;
}

/** Indexes a tarball's members by path without reading their data, so large archives stay on disk. */
function indexTar(path: string, fd: number): Map<string, Member> {
  const total = statSync(path).size;
  const readAt: ReadAt = (offset, length) => readFd(fd, offset, length);
  const members = new Map<string, Member>();
  for (const e of tarEntries(readAt, total)) {
    const key = e.path
      .split("/")
      .filter((p) => p !== "" && p !== ".")
      .join("/");
    if (e.type === "file") members.set(key, { offset: e.dataOffset, size: e.size });
    else if (e.type === "hardlink") members.set(key, { offset: 0, size: 0, link: e.linkname });
    else if (e.type === "symlink") members.set(key, { offset: 0, size: 0, link: resolveRelative(key, e.linkname) });
  }
  return members;
}

/** Resolves a symlink target inside the archive (older `docker save` links duplicate layers). */
function resolveRelative(from: string, target: string): string {
  const out = target.startsWith("/") ? [] : from.split("/").slice(0, -1);
  for (const p of target.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") out.pop();
    else out.push(p);
  }
  return out.join("/");
}

function notFound(path: string, rel: string): never {
  throw new BangerError("not_found", `${path} has no member ${rel}`);
}

/** Reads files out of an oci-archive or docker-save tarball by offset. */
function tarSource(path: string): ImageSource {
  const fd = openSync(path, "r");
  let members: Map<string, Member>;
  try {
    members = indexTar(path, fd);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  const find = (rel: string): Member | undefined => {
    let m = members.get(insidePath(rel));
    for (let hops = 0; m?.link !== undefined && hops < 8; hops++) m = members.get(m.link);
    return m?.link === undefined ? m : undefined;
  };
  const has = (rel: string) => find(rel) !== undefined;
  const member = (rel: string): Member => find(rel) ?? notFound(path, rel);
  const kind = kindOf(has) ?? (closeSync(fd), notAnImage(path));
  return {
    kind: kind === "oci" ? "oci-archive" : "docker-archive",
    has,
    async read(rel) {
      const m = member(rel);
      if (m.size > MAX_METADATA_BYTES) tooBig(rel, m.size);
      return readFd(fd, m.offset, m.size);
    },
    open(rel) {
      const m = member(rel);
      return { size: m.size, readAt: (offset, length) => readFd(fd, m.offset + offset, Math.max(0, Math.min(length, m.size - offset))), close() {} };
    },
    close: () => closeSync(fd),
  };
}

/** Opens an image source, detecting its kind from its contents rather than its name. */
export function openImageSource(path: string): ImageSource {
  if (!existsSync(path)) throw new BangerError("not_found", `${path} does not exist`, { hint: "Check the path given to `banger image import`." });
  return statSync(path).isDirectory() ? dirSource(path) : tarSource(path);
}
