import { createHash, type Hash } from "node:crypto";
import { closeSync, createWriteStream, fstatSync, openSync } from "node:fs";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as zlib from "node:zlib";
import { BangerError } from "../../errors.ts";
import { readFd, type SourceFile } from "./source.ts";

/** Caps on what one import may unpack, all layers together. */
export interface ImportLimits {
  maxBytes: number;
  maxEntries: number;
}

/** What an import has unpacked so far, counted against its ImportLimits. */
export interface ImportUsage {
  bytes: number;
  entries: number;
}

/** Limits for trusted inputs (banger's own builds): effectively none. */
export const NO_LIMITS: ImportLimits = { maxBytes: Number.MAX_SAFE_INTEGER, maxEntries: Number.MAX_SAFE_INTEGER };

const CHUNK = 1 << 20;

/** Streams a source file in chunks, so a layer is never held in memory whole. */
function readableOf(file: SourceFile): Readable {
  let at = 0;
  return new Readable({
    read() {
      if (at >= file.size) return void this.push(null);
      const chunk = file.readAt(at, Math.min(CHUNK, file.size - at));
      if (chunk.length === 0) return void this.destroy(new BangerError("invalid_argument", `image file ended early at byte ${at} of ${file.size}`));
      at += chunk.length;
      this.push(chunk);
    },
  });
}

/** A pass-through that hashes what flows and fails once more than `max` bytes have flowed. */
function meter(hash: Hash, max: number, over: () => BangerError): Transform & { bytes: number } {
  const t = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      t.bytes += chunk.length;
      if (t.bytes > max) return done(over());
      hash.update(chunk);
      done(null, chunk);
    },
  }) as Transform & { bytes: number };
  t.bytes = 0;
  return t;
}

/** Picks the decompressor by magic bytes; a plain tar passes through. */
function decompressorFor(head: Uint8Array): Transform | undefined {
  if (head[0] === 0x1f && head[1] === 0x8b) return zlib.createGunzip();
  // Bun has zstd streams in node:zlib; @types/node of this version does not list them yet.
  const zstd = (zlib as unknown as { createZstdDecompress(): Transform }).createZstdDecompress;
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return zstd();
  return undefined;
}

const GIB = 1024 ** 3;
const shownSize = (n: number) => (n >= GIB ? `${+(n / GIB).toFixed(2)} GiB` : `${+(n / 1024 ** 2).toFixed(2)} MiB`);

/** What `unpackLayer` wrote and the digests it saw on the way. */
export interface Unpacked {
  size: number;
  blobDigest: string;
  tarDigest: string;
}

/**
 * Decompresses a layer (gzip, zstd or plain) from `file` into the file `dest`, streaming,
 * hashing the stored and the unpacked bytes, and refusing once the import's byte cap is passed.
 */
export async function unpackLayer(file: SourceFile, dest: string, label: string, limits: ImportLimits, used: ImportUsage): Promise<Unpacked> {
  const blobHash = createHash("sha256");
  const tarHash = createHash("sha256");
  const left = limits.maxBytes - used.bytes;
  const capError = () =>
    new BangerError("invalid_argument", `${label} unpacks to more than the import cap of ${shownSize(limits.maxBytes)} (all layers together)`, {
      hint: "The layer is a decompression bomb or the image is very large; raise import_max_size in the config if the image is genuine.",
    });
  const stored = meter(blobHash, Number.MAX_SAFE_INTEGER, capError);
  const unpacked = meter(tarHash, left, capError);
  const decompress = decompressorFor(file.readAt(0, 4));
  const out = createWriteStream(dest, { mode: 0o600 });
  try {
    if (decompress) await pipeline(readableOf(file), stored, decompress, unpacked, out);
    else await pipeline(readableOf(file), stored, unpacked, out);
  } catch (err) {
    if (err instanceof BangerError) throw err;
    throw new BangerError("invalid_argument", `${label} could not be decompressed: ${(err as Error).message}`, { cause: err });
  }
  used.bytes += unpacked.bytes;
  return { size: unpacked.bytes, blobDigest: `sha256:${blobHash.digest("hex")}`, tarDigest: `sha256:${tarHash.digest("hex")}` };
}

/** Opens a local file as a SourceFile. */
export function openLocal(path: string): SourceFile {
  const fd = openSync(path, "r");
  return { size: fstatSync(fd).size, readAt: (offset, length) => readFd(fd, offset, length), close: () => closeSync(fd) };
}
