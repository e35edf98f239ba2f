/**
 * extract-vmlinux in TypeScript: Firecracker boots only an ELF vmlinux, a distribution ships
 * a bzImage. The bzImage's setup header says where its compressed payload lies; the payload
 * decompresses to the ELF vmlinux. No kernel compile and no external tool.
 */
import { BangerError } from "../../errors.ts";
import { LZ4_LEGACY_MAGIC, lz4LegacyDecompress } from "./lz4.ts";

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];

/** Compressions a kernel payload may use, by their leading magic bytes. */
const PAYLOADS: Array<{ name: string; magic: number[] }> = [
  { name: "lz4", magic: LZ4_LEGACY_MAGIC },
  { name: "gzip", magic: [0x1f, 0x8b, 0x08] },
  { name: "zstd", magic: [0x28, 0xb5, 0x2f, 0xfd] },
  { name: "xz", magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] },
  { name: "lzma", magic: [0x5d, 0x00, 0x00] },
  { name: "bzip2", magic: [0x42, 0x5a, 0x68] },
  { name: "lzo", magic: [0x89, 0x4c, 0x5a, 0x4f] },
];

const startsWith = (buf: Uint8Array, magic: number[], at = 0) => magic.every((b, i) => buf[at + i] === b);

/** True for a bzImage: the "HdrS" setup header signature at 0x202. */
export function isBzImage(bytes: Uint8Array): boolean {
  return bytes.length > 0x250 && startsWith(bytes, [0x48, 0x64, 0x72, 0x53], 0x202);
}

/** The compressed payload inside a bzImage, from the boot protocol's payload_offset/length (2.08+). */
export function bzImagePayload(bytes: Uint8Array): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint16(0x206, true);
  if (version < 0x208) throw new Error(`boot protocol ${version.toString(16)} has no payload fields`);
  const setupSects = bytes[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + view.getUint32(0x248, true);
  const length = view.getUint32(0x24c, true);
  if (start + length > bytes.length) throw new Error("payload lies beyond the end of the file");
  return bytes.subarray(start, start + length);
}

function decompress(name: string, payload: Uint8Array): Uint8Array {
  // the build appends the uncompressed size (little-endian u32) after the stream
  const size = new DataView(payload.buffer, payload.byteOffset + payload.length - 4, 4).getUint32(0, true);
  if (name === "lz4") return lz4LegacyDecompress(payload, size);
  if (name === "gzip") return Bun.gunzipSync(payload.subarray(0, payload.length - 4) as Uint8Array<ArrayBuffer>);
  if (name === "zstd") return Bun.zstdDecompressSync(payload.subarray(0, payload.length - 4));
  throw new Error(`${name} payloads are not supported (lz4, gzip and zstd are)`);
}

/** Returns the ELF vmlinux inside a bzImage (or the bytes unchanged when they already are an ELF). */
export function extractVmlinux(bytes: Uint8Array, source: string): Uint8Array {
  if (startsWith(bytes, ELF_MAGIC)) return bytes;
  const fail = (why: string) =>
    new BangerError("invalid_argument", `cannot extract a vmlinux from ${source}: ${why}`, {
      hint: "Pass an uncompressed ELF vmlinux instead (banger kernel import), or a bzImage compressed with lz4, gzip or zstd",
    });
  if (!isBzImage(bytes)) throw fail("it is neither an ELF vmlinux nor a bzImage");
  let payload: Uint8Array;
  try {
    payload = bzImagePayload(bytes);
  } catch (err) {
    throw fail((err as Error).message);
  }
  const kind = PAYLOADS.find((p) => startsWith(payload, p.magic));
  if (!kind) throw fail("its payload's compression is not recognised");
  let elf: Uint8Array;
  try {
    elf = decompress(kind.name, payload);
  } catch (err) {
    throw fail((err as Error).message);
  }
  if (!startsWith(elf, ELF_MAGIC)) throw fail(`its ${kind.name} payload does not decompress to an ELF file`);
  return elf;
}
