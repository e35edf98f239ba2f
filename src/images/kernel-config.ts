/**
 * `banger kernel build`: compiles a guest vmlinux from the distro's linux-source package
 * with banger's config: Firecracker's microvm-kernel-ci-x86_64-6.1 config plus what banger
 * needs on top (BANGER_KERNEL_FRAGMENT). The full config shipped beside this file is that
 * result, known to boot under QEMU microvm and Firecracker.
 */
import { existsSync } from "node:fs";
import { mkdir, readdir } from "node:fs/promises";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import type { Runner } from "../host/runner.ts";
import baseConfig from "./kernel/banger-x86_64-6.1.config" with { type: "text" };

/** What banger needs beyond Firecracker's guest config, and why. Applied last, so it wins. */
export const BANGER_KERNEL_FRAGMENT = `
# QEMU microvm takes virtio-mmio devices from the kernel command line
CONFIG_VIRTIO_MMIO=y
CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y
# Firecracker's SendCtrlAltDel arrives through the i8042 keyboard controller
CONFIG_SERIO_I8042=y
CONFIG_INPUT_KEYBOARD=y
CONFIG_KEYBOARD_ATKBD=y
# QEMU's graceful stop (system_powerdown) is an ACPI power button press
CONFIG_ACPI=y
CONFIG_ACPI_BUTTON=y
# PVH entry: both VMMs boot an uncompressed ELF vmlinux
CONFIG_PVH=y
# disks, network, console, agent channels
CONFIG_VIRTIO_BLK=y
CONFIG_VIRTIO_NET=y
CONFIG_VIRTIO_CONSOLE=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_VSOCKETS=y
CONFIG_VIRTIO_VSOCKETS=y
CONFIG_VSOCKETS_LOOPBACK=y
CONFIG_VSOCKETS_DIAG=y
# root filesystem and banger's copy-on-write root (overlay over the read-only base)
CONFIG_EXT4_FS=y
CONFIG_OVERLAY_FS=y
CONFIG_DEVTMPFS=y
CONFIG_DEVTMPFS_MOUNT=y
CONFIG_TMPFS=y
# the kernel sets the guest IP from ip= (no DHCP client in the image)
CONFIG_IP_PNP=y
# what dev workloads inside the VM expect (containers, FUSE)
CONFIG_FUSE_FS=y
CONFIG_VIRTIO_FS=y
CONFIG_TUN=y
CONFIG_BRIDGE=y
CONFIG_VETH=y
CONFIG_NETFILTER=y
CONFIG_CGROUPS=y
CONFIG_MEMCG=y
CONFIG_NAMESPACES=y
CONFIG_USER_NS=y
`;

/** The full config banger starts a build from. */
export const BASE_KERNEL_CONFIG: string = baseConfig;

/** The options the fragment sets, as [name, value]. */
export function fragmentOptions(fragment = BANGER_KERNEL_FRAGMENT): Array<[string, string]> {
  return fragment
    .split("\n")
    .map((l) => /^(CONFIG_[A-Z0-9_]+)=(.*)$/.exec(l.trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => [m[1], m[2]]);
}

/** Options of the fragment the final .config lost (an unmet Kconfig dependency). */
export function missingOptions(finalConfig: string, fragment = BANGER_KERNEL_FRAGMENT): string[] {
  const have = new Set(finalConfig.split("\n").map((l) => l.trim()));
  return fragmentOptions(fragment)
    .filter(([k, v]) => !have.has(`${k}=${v}`))
    .map(([k]) => k);
}

/** Picks the newest /usr/src/linux-source-*.tar.xz. */
export async function findKernelSource(usrSrc: string): Promise<string> {
  const names = existsSync(usrSrc) ? await readdir(usrSrc) : [];
  const tarballs = names.filter((n) => /^linux-source-[\d.]+\.tar\.xz$/.test(n));
  if (!tarballs.length) {
    throw new BangerError("not_available", `no linux-source-*.tar.xz in ${usrSrc}`, {
      hint: "Install the kernel source: sudo apt-get install linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev",
    });
  }
  tarballs.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  return join(usrSrc, tarballs[tarballs.length - 1]);
}

export interface KernelBuildOptions {
  /** Scratch directory; the source tree is extracted here (about 1.5 GiB). */
  workDir: string;
  usrSrc?: string;
  jobs?: number;
  onStage?: (stage: string) => void;
}

/** Compiles vmlinux (about 8 minutes on 2 cores); returns its path for importKernel. */
export async function buildKernel(o: KernelBuildOptions, deps: { runner: Runner; cpus: number }): Promise<{ vmlinux: string; sourceTree: string }> {
  const tarball = await findKernelSource(o.usrSrc ?? "/usr/src");
  const tree = join(
    o.workDir,
    tarball
      .split("/")
      .pop()!
      .replace(/\.tar\.xz$/, ""),
  );
  await mkdir(o.workDir, { recursive: true });
  o.onStage?.("extract");
  await deps.runner.run(["tar", "-C", o.workDir, "-xf", tarball]);
  // Kconfig lets a later assignment override an earlier one, so the fragment wins.
  await Bun.write(join(tree, ".config"), `${BASE_KERNEL_CONFIG}\n${BANGER_KERNEL_FRAGMENT}`);
  o.onStage?.("configure");
  await deps.runner.run(["make", "-C", tree, "olddefconfig"]);
  const lost = missingOptions(await Bun.file(join(tree, ".config")).text());
  if (lost.length) {
    throw new BangerError("failed_precondition", `kernel config lost ${lost.join(", ")} after olddefconfig`, {
      hint: "This kernel source does not support banger's config; use linux-source-6.1",
    });
  }
  o.onStage?.("compile");
  await deps.runner.run(["make", "-C", tree, `-j${o.jobs ?? deps.cpus}`, "vmlinux"], { timeoutMs: 3 * 3600_000 });
  return { vmlinux: join(tree, "vmlinux"), sourceTree: tree };
}
