/** LZ4 "legacy" frames, the format the Linux build compresses an LZ4 kernel (bzImage payload) with. */

/** The legacy frame's magic, 0x184C2102 little-endian. */
export const LZ4_LEGACY_MAGIC = [0x02, 0x21, 0x4c, 0x18];
const MAGIC_U32 = 0x184c2102;
/** A legacy block holds at most 8 MiB uncompressed, so its compressed size is bounded too. */
const MAX_BLOCK = 8 * 1024 * 1024 + (8 * 1024 * 1024) / 255 + 16;

/** A growable output buffer: LZ4 matches copy from bytes already written. */
class Output {
  buf: Uint8Array;
  len = 0;
  constructor(hint: number) {
    this.buf = new Uint8Array(Math.max(hint, 1 << 20));
  }
  reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
}

/** Reads an LZ4 length continuation (bytes of 255 add up until one is smaller). */
function readLength(src: Uint8Array, at: { i: number }, base: number): number {
  let n = base;
  if (base !== 15) return n;
  let b: number;
  do {
    b = src[at.i++]!;
    n += b;
  } while (b === 255 && at.i < src.length);
  return n;
}

/** Decodes one LZ4 block (src[start, end)) onto out. */
function decodeBlock(src: Uint8Array, start: number, end: number, out: Output): void {
  const at = { i: start };
  while (at.i < end) {
    const token = src[at.i++]!;
    const lit = readLength(src, at, token >> 4);
    out.reserve(lit);
    out.buf.set(src.subarray(at.i, at.i + lit), out.len);
    out.len += lit;
    at.i += lit;
    if (at.i >= end) break;
    const offset = src[at.i]! | (src[at.i + 1]! << 8);
    at.i += 2;
    if (offset === 0 || offset > out.len) throw new Error(`bad LZ4 match offset ${offset} at ${at.i}`);
    const len = readLength(src, at, token & 15) + 4;
    out.reserve(len);
    const from = out.len - offset;
    if (offset >= len) out.buf.copyWithin(out.len, from, from + len);
    else for (let k = 0; k < len; k++) out.buf[out.len + k] = out.buf[from + k]!;
    out.len += len;
  }
}

/**
 * Decompresses a legacy LZ4 stream starting at its magic. Decoding stops at the end of the
 * input or at a block size that cannot be one (the kernel build appends the uncompressed size
 * after the last block), so trailing bytes are tolerated as `lz4 -d` tolerates them.
 */
export function lz4LegacyDecompress(src: Uint8Array, sizeHint = 0): Uint8Array {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  if (src.length < 4 || view.getUint32(0, true) !== MAGIC_U32) throw new Error("not an LZ4 legacy stream");
  const out = new Output(sizeHint);
  let i = 4;
  while (i + 4 <= src.length) {
    const size = view.getUint32(i, true);
    if (size === MAGIC_U32) {
      i += 4;
      continue;
    }
    if (size === 0 || size > MAX_BLOCK || i + 4 + size > src.length) break;
    decodeBlock(src, i + 4, i + 4 + size, out);
    i += 4 + size;
  }
  return out.buf.subarray(0, out.len);
}
