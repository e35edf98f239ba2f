/**
 * An image's own kernel: the distribution's kernel package installed in the image (modules in
 * the rootfs), with the ELF vmlinux extracted from its bzImage and banger's small initrd beside
 * the rootfs, so a VM boots the kernel its modules belong to.
 */
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { extractVmlinux } from "./kernel/extract.ts";
import { buildInitrd } from "./kernel/initrd.ts";
import { readKernelVersion } from "./kernels.ts";

/** The Debian packages that give an image its kernel and what banger's initrd is made of. */
export const KERNEL_PACKAGES = ["linux-image-cloud-amd64", "busybox-static", "kmod"];

/** The kernel files an image build leaves beside rootfs.ext4. */
export interface ImageKernel {
  /** The kernel release, what `uname -r` says in the guest. */
  release: string;
  vmlinux: string;
  initrd: string;
  sha256: string;
  size: number;
}

/** The release of the one kernel installed in a tree (/boot/vmlinuz-<release>). */
export async function installedRelease(tree: string): Promise<string> {
  const names = (await readdir(join(tree, "boot")).catch(() => [] as string[])).filter((n) => n.startsWith("vmlinuz-"));
  if (names.length !== 1) {
    throw new BangerError(
      "failed_precondition",
      names.length ? `the image has ${names.length} kernels in /boot (${names.join(", ")}); expected one` : "the image has no kernel in /boot",
      {
        hint: `Install exactly one kernel package in the image (${KERNEL_PACKAGES[0]})`,
      },
    );
  }
  return names[0]!.slice("vmlinuz-".length);
}

/** Writes `vmlinux` and `initrd.img` for the tree's kernel into outDir. */
export async function writeImageKernel(tree: string, outDir: string): Promise<ImageKernel> {
  const release = await installedRelease(tree);
  const bz = join(tree, "boot", `vmlinuz-${release}`);
  const elf = extractVmlinux(new Uint8Array(await Bun.file(bz).arrayBuffer()), bz);
  const banner = readKernelVersion(elf);
  if (banner !== release) {
    throw new BangerError("failed_precondition", `${bz} says it is ${banner ?? "no Linux kernel"}, not ${release}`, {
      hint: "Reinstall the kernel package in the image",
    });
  }
  const vmlinux = join(outDir, "vmlinux");
  const initrd = join(outDir, "initrd.img");
  await writeFile(vmlinux, elf);
  await writeFile(initrd, await buildInitrd(tree, release));
  const sha256 = new Bun.CryptoHasher("sha256").update(elf).digest("hex");
  return { release, vmlinux, initrd, sha256, size: elf.byteLength };
}
