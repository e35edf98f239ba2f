import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { downloadVerified, fetchCatalog, findEntry, type Fetch } from "./catalog.ts";

/** A registered guest kernel: an uncompressed ELF vmlinux at <kernelsDir>/<name>/vmlinux. */
export interface KernelInfo {
  name: string;
  version: string;
  path: string;
  sha256: string;
  size: number;
}

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function startsWith(buf: Uint8Array, magic: number[]): boolean {
  return magic.every((b, i) => buf[i] === b);
}

/** Reads the kernel release from the "Linux version X.Y.Z" banner inside a vmlinux. */
export function readKernelVersion(elf: Uint8Array): string | null {
  const buf = Buffer.from(elf.buffer, elf.byteOffset, elf.byteLength);
  let at = buf.indexOf("Linux version ");
  while (at !== -1) {
    const m = /^Linux version (\d+\.\d+(?:\.\d+)?[^\s]*)/.exec(buf.toString("latin1", at, at + 200));
    if (m) return m[1];
    at = buf.indexOf("Linux version ", at + 1);
  }
  return null;
}

/** Returns the plain ELF bytes of a vmlinux given plain or zstd-compressed bytes. */
export function decompressKernel(bytes: Uint8Array, source: string): Uint8Array {
  let elf = bytes;
  if (startsWith(bytes, ZSTD_MAGIC)) {
    try {
      elf = Bun.zstdDecompressSync(bytes);
    } catch (err) {
      throw new BangerError("invalid_argument", `${source} looks like zstd but does not decompress: ${(err as Error).message}`, {
        hint: "Check the file with `zstd -t`",
        cause: err,
      });
    }
  }
  if (!startsWith(elf, ELF_MAGIC)) {
    throw new BangerError("invalid_argument", `${source} is not an ELF vmlinux (plain or .zst)`, {
      hint: "Pass the uncompressed vmlinux from the kernel build (not bzImage), or its .zst",
    });
  }
  return elf;
}

/** Imports a local vmlinux (plain or .zst) as <kernelsDir>/<name>/vmlinux; name defaults to the version. */
export async function importKernel(opts: { src: string; kernelsDir: string; name?: string }): Promise<KernelInfo> {
  const file = Bun.file(opts.src);
  if (!(await file.exists())) {
    throw new BangerError("not_found", `kernel file ${opts.src} does not exist`, { hint: "Pass the path of a vmlinux or vmlinux.zst" });
  }
  const elf = decompressKernel(new Uint8Array(await file.arrayBuffer()), opts.src);
  const version = readKernelVersion(elf);
  if (!version) {
    throw new BangerError("invalid_argument", `${opts.src} has no "Linux version" banner; it is not a Linux kernel`, {
      hint: "Pass the vmlinux produced by a Linux kernel build",
    });
  }
  const name = opts.name ?? version;
  if (!NAME_RE.test(name)) {
    throw new BangerError("invalid_argument", `kernel name ${JSON.stringify(name)} is invalid`, {
      hint: "Use letters, digits, '.', '_' and '-' (at most 64 characters)",
    });
  }
  const dir = join(opts.kernelsDir, name);
  if (existsSync(dir)) {
    throw new BangerError("already_exists", `kernel ${name} already exists`, {
      hint: `Delete it first (banger kernel delete ${name}) or import under another --name`,
    });
  }
  // Written into a temp dir and renamed so a crash never leaves a half-written kernel registered.
  await mkdir(opts.kernelsDir, { recursive: true });
  const tmp = join(opts.kernelsDir, `.import-${randomBytes(6).toString("hex")}`);
  try {
    await mkdir(tmp);
    await Bun.write(join(tmp, "vmlinux"), elf);
    await rename(tmp, dir);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  const sha256 = new Bun.CryptoHasher("sha256").update(elf).digest("hex");
  return { name, version, path: join(dir, "vmlinux"), sha256, size: elf.byteLength };
}

/** Downloads a kernel named in the catalog, verifies its sha256, then registers it. */
export async function pullKernel(opts: { catalogUrl: string; name: string; kernelsDir: string; fetch: Fetch }): Promise<KernelInfo> {
  const entry = findEntry(await fetchCatalog(opts.catalogUrl, opts.fetch), opts.name, "kernel");
  if (existsSync(join(opts.kernelsDir, entry.name))) {
    throw new BangerError("already_exists", `kernel ${entry.name} already exists`, {
      hint: `Delete it first: banger kernel delete ${entry.name}`,
    });
  }
  const download = join(opts.kernelsDir, `.pull-${randomBytes(6).toString("hex")}`);
  try {
    await downloadVerified({ url: entry.url, sha256: entry.sha256, size: entry.size, dest: download, fetch: opts.fetch });
    return await importKernel({ src: download, kernelsDir: opts.kernelsDir, name: entry.name });
  } finally {
    await rm(download, { force: true });
  }
}

/** Removes a registered kernel; not_found when it is not there. */
export async function deleteKernel(kernelsDir: string, name: string): Promise<void> {
  const dir = join(kernelsDir, name);
  if (!NAME_RE.test(name) || !existsSync(dir)) {
    throw new BangerError("not_found", `kernel ${name} does not exist`, { hint: "See banger kernel list" });
  }
  await rm(dir, { recursive: true, force: true });
}

/** Names of the kernels present on disk (each a directory holding a vmlinux). */
export async function listKernelDirs(kernelsDir: string): Promise<string[]> {
  if (!existsSync(kernelsDir)) return [];
  const names = (await readdir(kernelsDir)).filter((n) => NAME_RE.test(n));
  const out: string[] = [];
  for (const n of names.sort()) {
    const s = await stat(join(kernelsDir, n, "vmlinux")).catch(() => null);
    if (s?.isFile()) out.push(n);
  }
  return out;
}
