import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { concatBytes, fixChecksum, writeTar, type TarInput } from "../images/tar.ts";
import { sha256Digest } from "../images/oci/manifest.ts";

/** Test fixtures: OCI layouts, oci-archives and docker-save tarballs written from TarInput layers. */

/** One image for a fixture: its layers bottom-up and how each is compressed. */
export interface FixtureImage {
  layers: TarInput[][];
  ref?: string;
  compress?: Array<"gzip" | "zstd" | "none">;
  config?: Record<string, unknown>;
}

const enc = new TextEncoder();

function compress(tar: Uint8Array, how: "gzip" | "zstd" | "none"): Uint8Array {
  if (how === "gzip") return Bun.gzipSync(tar as Uint8Array<ArrayBuffer>);
  if (how === "zstd") return Bun.zstdCompressSync(tar);
  return tar;
}

function configFor(img: FixtureImage, diffIds: string[]): Uint8Array {
  const config = { architecture: "amd64", os: "linux", config: { Env: ["PATH=/usr/bin:/bin"], Cmd: ["/bin/sh"], User: "0" }, ...img.config };
  return enc.encode(JSON.stringify({ ...config, rootfs: { type: "layers", diff_ids: diffIds } }));
}

/** Writes an OCI image layout directory holding the given images. */
export function writeOciLayout(dir: string, images: FixtureImage[]): void {
  mkdirSync(join(dir, "blobs/sha256"), { recursive: true });
  const put = (bytes: Uint8Array) => {
    const digest = sha256Digest(bytes);
    writeFileSync(join(dir, "blobs/sha256", digest.slice(7)), bytes);
    return { digest, size: bytes.length };
  };
  const manifests = images.map((img) => {
    const tars = img.layers.map((l) => writeTar(l));
    const layers = tars.map((t, i) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...put(compress(t, img.compress?.[i] ?? "gzip")) }));
    const config = { mediaType: "application/vnd.oci.image.config.v1+json", ...put(configFor(img, tars.map(sha256Digest))) };
    const manifest = put(enc.encode(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config, layers })));
    const annotations = img.ref ? { "org.opencontainers.image.ref.name": img.ref } : undefined;
    return { mediaType: "application/vnd.oci.image.manifest.v1+json", ...manifest, platform: { os: "linux", architecture: "amd64" }, annotations };
  });
  writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  writeFileSync(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests }));
}

/** Packs a directory into a tarball (how an oci-archive is an OCI layout in a tar). */
export function tarDirectory(dir: string): Uint8Array {
  const entries: TarInput[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const full = join(d, name);
      const rel = relative(dir, full);
      if (statSync(full).isDirectory()) {
        entries.push({ path: `${rel}/`, type: "dir" });
        walk(full);
      } else entries.push({ path: rel, data: new Uint8Array(readFileSync(full)) });
    }
  };
  walk(dir);
  return writeTar(entries);
}

/** Builds a `docker save` tarball (manifest.json, <id>.json configs, <n>/layer.tar). */
export function dockerSaveTar(images: FixtureImage[]): Uint8Array {
  const entries: TarInput[] = [];
  const manifest = images.map((img, n) => {
    const tars = img.layers.map((l) => writeTar(l));
    const config = configFor(img, tars.map(sha256Digest));
    const configName = `${sha256Digest(config).slice(7)}.json`;
    entries.push({ path: configName, data: config });
    const layers = tars.map((t, i) => {
      const path = `img${n}-layer${i}/layer.tar`;
      entries.push({ path: `img${n}-layer${i}/`, type: "dir" }, { path, data: t });
      return path;
    });
    return { Config: configName, RepoTags: img.ref ? [img.ref] : null, Layers: layers };
  });
  entries.push({ path: "manifest.json", data: JSON.stringify(manifest) });
  return writeTar(entries);
}

/** Writes an OCI layout of one image whose layer blobs are given as stored bytes (crafted layers). */
export function writeRawLayout(dir: string, blobs: Uint8Array[]): void {
  mkdirSync(join(dir, "blobs/sha256"), { recursive: true });
  const put = (bytes: Uint8Array) => {
    const digest = sha256Digest(bytes);
    writeFileSync(join(dir, "blobs/sha256", digest.slice(7)), bytes);
    return { digest, size: bytes.length };
  };
  // diff_ids are the blobs' own digests: right for plain tars; a compressed layer fails its cap first.
  const layers = blobs.map((b) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", ...put(b) }));
  const config = { mediaType: "application/vnd.oci.image.config.v1+json", ...put(configFor({ layers: [] }, blobs.map(sha256Digest))) };
  const manifest = put(enc.encode(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config, layers })));
  writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  writeFileSync(
    join(dir, "index.json"),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", ...manifest }] }),
  );
}

/** A tar of one member whose size field reads as a negative octal number (-512): about 1.5 KB. */
export function negativeSizeTar(): Uint8Array {
  const tar = writeTar([{ path: "evil", data: "" }]);
  const hdr = tar.subarray(0, 512);
  hdr.fill(0, 124, 136);
  hdr.set(enc.encode("-0001000"), 124);
  fixChecksum(hdr);
  return tar;
}

/**
 * A gzip bomb layer: one file of `mib` MiB of zeros, stored as concatenated gzip members
 * (each MiB of zeros is ~1 KiB), so a GiB costs about a MiB and is made in milliseconds.
 */
export function gzipBombLayer(mib: number): Uint8Array {
  const header = writeTar([{ path: "zeros", data: "" }])
    .subarray(0, 512)
    .slice();
  header.fill(0, 124, 136);
  header.set(enc.encode((mib * 1024 * 1024).toString(8).padStart(11, "0")), 124);
  fixChecksum(header);
  const zeros = Bun.gzipSync(new Uint8Array(1 << 20), { level: 9 });
  return concatBytes([Bun.gzipSync(header), ...Array.from({ length: mib }, () => zeros)]);
}
