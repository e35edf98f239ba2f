/**
 * The golden image build: a Debian rootfs from mmdebstrap (variant minbase) with banger's
 * boot glue, sshd drop-in, guest agent and the distribution's kernel package baked in, turned
 * into a read-only base ext4 (/dev/vda), a small work seed ext4 holding the image's /root
 * (cloned per VM) and the image's own kernel (vmlinux + initrd, see image-kernel.ts).
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import type { Runner } from "../host/runner.ts";
import { makeWorkSeed, mkfsArgv } from "./disks.ts";
import { glueEntries, writeGlue } from "./glue/index.ts";
import { KERNEL_PACKAGES, writeImageKernel, type ImageKernel } from "./image-kernel.ts";

/** The packages every golden image carries on top of minbase. */
export const IMAGE_PACKAGES = [
  "openssh-server",
  "systemd-sysv",
  "udev",
  "dbus",
  "iproute2",
  "git",
  "ca-certificates",
  "sudo",
  "curl",
  "python3",
  "openssl",
  "procps",
];

export type BuildMode = "auto" | "root" | "unshare";

export interface BuildImageOptions {
  name: string;
  /** Final directory for rootfs.ext4 and work-seed.ext4; must not exist yet. */
  outDir: string;
  /** The guest agent executable baked in at /usr/local/bin/banger-agent. */
  agentBinary: string;
  suite?: string;
  mode?: BuildMode;
  mirror?: string;
  extraPackages?: string[];
  onStage?: (stage: string) => void;
}

export interface BuiltImage {
  rootfs: string;
  workSeed: string;
  sizeBytes: number;
  /** sha256 of rootfs.ext4: identifies this exact build. */
  fingerprint: string;
  agentVersion: string;
  /** Installed packages as name=version, sorted. */
  packages: string[];
  /** The kernel installed in the image, ready to boot (files in outDir). */
  kernel: ImageKernel;
}

export interface BuildDeps {
  runner: Runner;
  uid: number;
  which: (bin: string) => string | null;
}

/** Picks root mode when running as root, else rootless unshare mode (needs /etc/subuid). */
export function resolveMode(mode: BuildMode, uid: number): "root" | "unshare" {
  return mode === "auto" ? (uid === 0 ? "root" : "unshare") : mode;
}

/** The mmdebstrap command line: a minbase directory tree with the glue tarball unpacked in. */
export function mmdebstrapArgv(o: {
  suite: string;
  mode: "root" | "unshare";
  rootDir: string;
  glueTar: string;
  packages: string[];
  mirror?: string;
}): string[] {
  return [
    "mmdebstrap",
    "--variant=minbase",
    `--mode=${o.mode}`,
    "--format=directory",
    `--include=${o.packages.join(",")}`,
    // documentation and translations are dead weight in a dev VM image
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    `--customize-hook=tar-in ${o.glueTar} /`,
    // every VM gets its own host key from the config drive: none may be shared via the image
    '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
    o.suite,
    o.rootDir,
    ...(o.mirror ? [o.mirror] : []),
  ];
}

/** Runs argv where the built tree's ownership is visible: directly in root mode, in a user namespace otherwise. */
export function inTreeNamespace(mode: "root" | "unshare", argv: string[]): string[] {
  return mode === "root" ? argv : ["mmdebstrap", "--unshare-helper", ...argv];
}

/** Parses dpkg's status file into sorted name=version lines of installed packages. */
export function parseDpkgStatus(status: string): string[] {
  const out: string[] = [];
  for (const para of status.split(/\n\n+/)) {
    const field = (k: string) => new RegExp(`^${k}: (.*)$`, "m").exec(para)?.[1];
    if (field("Package") && field("Status")?.endsWith(" installed")) out.push(`${field("Package")}=${field("Version")}`);
  }
  return out.sort();
}

/** The agent's version: its own `--version` output, else a content hash. */
export async function agentVersionOf(binary: string, runner: Runner): Promise<string> {
  const r = await runner.run([binary, "--version"], { allowFailure: true, timeoutMs: 10_000 }).catch(() => null);
  const v = r?.code === 0 ? r.stdout.trim() : "";
  if (v && !v.includes("\n") && v.length < 80) return v;
  const sha = new Bun.CryptoHasher("sha256").update(await Bun.file(binary).arrayBuffer()).digest("hex");
  return `sha256-${sha.slice(0, 12)}`;
}

async function sha256File(path: string): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  for await (const chunk of Bun.file(path).stream() as unknown as AsyncIterable<Uint8Array>) hasher.update(chunk);
  return hasher.digest("hex");
}

/** Bytes and inodes a tree uses, for sizing its ext4 with headroom. */
async function treeUsage(dir: string, mode: "root" | "unshare", runner: Runner): Promise<{ bytes: number; inodes: number }> {
  const bytes = Number((await runner.run(inTreeNamespace(mode, ["du", "-s", "-B1", dir]))).stdout.split(/\s/)[0]);
  const inodes = Number((await runner.run(inTreeNamespace(mode, ["du", "-s", "--inodes", dir]))).stdout.split(/\s/)[0]);
  return { bytes, inodes };
}

/** A Debian package name (policy §5.6.1), optionally with =version or /suite. */
const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]+([=/][A-Za-z0-9+.~:-]+)?$/;

function preflight(o: BuildImageOptions, deps: BuildDeps): void {
  const bad = (o.extraPackages ?? []).filter((p) => !PACKAGE_RE.test(p));
  if (bad.length) {
    throw new BangerError("invalid_argument", `not a Debian package name: ${bad.map((p) => JSON.stringify(p)).join(", ")}`, {
      hint: "Pass names separated by commas, e.g. --packages build-essential,nodejs",
    });
  }
  if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(o.name)) {
    throw new BangerError("invalid_argument", `image name ${JSON.stringify(o.name)} is invalid`, { hint: "Use lowercase letters, digits, '.', '_' and '-'" });
  }
  if (existsSync(o.outDir)) {
    throw new BangerError("already_exists", `image ${o.name} already exists at ${o.outDir}`, { hint: `Delete it first: banger image delete ${o.name}` });
  }
  for (const bin of ["mmdebstrap", "mkfs.ext4", "tar"]) {
    if (!deps.which(bin)) {
      throw new BangerError("not_available", `${bin} is not installed; image build needs it`, {
        hint: "Install it: sudo apt-get install mmdebstrap e2fsprogs",
      });
    }
  }
  if (!existsSync(o.agentBinary)) {
    throw new BangerError("not_found", `guest agent binary ${o.agentBinary} is missing`, { hint: "Build it first (bun run build)" });
  }
}

/** Builds a golden image into `outDir` (made atomically: a failed build leaves nothing). */
export async function buildImage(o: BuildImageOptions, deps: BuildDeps): Promise<BuiltImage> {
  preflight(o, deps);
  const mode = resolveMode(o.mode ?? "auto", deps.uid);
  const stage = (s: string) => o.onStage?.(s);
  const work = `${o.outDir}.build-${randomBytes(6).toString("hex")}`;
  const rootDir = join(work, "tree");
  await mkdir(join(work, "glue"), { recursive: true });
  try {
    stage("glue");
    const agentVersion = await agentVersionOf(o.agentBinary, deps.runner);
    const glueTar = await packGlue(work, o.agentBinary, agentVersion, deps.runner);

    stage("mmdebstrap");
    const packages = [...IMAGE_PACKAGES, ...KERNEL_PACKAGES, ...(o.extraPackages ?? [])];
    await deps.runner.run(mmdebstrapArgv({ suite: o.suite ?? "bookworm", mode, rootDir, glueTar, packages, mirror: o.mirror }), { timeoutMs: 30 * 60_000 });
    const installed = parseDpkgStatus(await Bun.file(join(rootDir, "var/lib/dpkg/status")).text());

    stage("kernel");
    const kernel = await writeImageKernel(rootDir, work);

    stage("rootfs");
    const { rootfs, sizeBytes } = await makeBaseRootfs(rootDir, work, mode, deps.runner);

    stage("work seed");
    await makeImageWorkSeed(rootDir, work, mode, deps.runner);
    await deps.runner.run(inTreeNamespace(mode, ["rm", "-rf", rootDir]));

    stage("fingerprint");
    const fingerprint = await sha256File(rootfs);
    const kernelOut = await moveIntoPlace(o.outDir, work, kernel);
    return {
      rootfs: join(o.outDir, "rootfs.ext4"),
      workSeed: join(o.outDir, "work-seed.ext4"),
      sizeBytes,
      fingerprint,
      agentVersion,
      packages: installed,
      kernel: kernelOut,
    };
  } catch (err) {
    await rm(o.outDir, { recursive: true, force: true });
    throw err;
  } finally {
    if (existsSync(rootDir)) await deps.runner.run(inTreeNamespace(mode, ["rm", "-rf", rootDir]), { allowFailure: true });
    await rm(work, { recursive: true, force: true });
  }
}

/** Writes the boot glue (agent, units, sshd drop-in) under `work/glue` and packs it as root-owned `work/glue.tar`. */
async function packGlue(work: string, agentBinary: string, agentVersion: string, runner: Runner): Promise<string> {
  await writeGlue(join(work, "glue"), glueEntries({ binary: agentBinary, version: agentVersion }));
  const glueTar = join(work, "glue.tar");
  await runner.run(["tar", "--owner=0", "--group=0", "--numeric-owner", "-C", join(work, "glue"), "-cf", glueTar, "etc", "usr"]);
  return glueTar;
}

/** Makes `work/rootfs.ext4` from the tree, sized to it with headroom for metadata. */
async function makeBaseRootfs(rootDir: string, work: string, mode: "root" | "unshare", runner: Runner): Promise<{ rootfs: string; sizeBytes: number }> {
  const { bytes, inodes } = await treeUsage(rootDir, mode, runner);
  // The base is read-only at run time (writes land on the overlay): headroom is for metadata.
  const sizeBytes = Math.ceil((bytes * 1.15 + 128 * 1024 * 1024) / (1024 * 1024)) * 1024 * 1024;
  const rootfs = join(work, "rootfs.ext4");
  await Bun.write(rootfs, "");
  await runner.run(["truncate", "-s", String(sizeBytes), rootfs]);
  const mkfs = mkfsArgv(rootfs, "banger-root", rootDir, ["-N", String(Math.ceil(inodes * 1.5) + 4096)]);
  await runner.run(inTreeNamespace(mode, mkfs));
  return { rootfs, sizeBytes };
}

/** Makes `work/work-seed.ext4` from the tree's /root, its mkfs in the tree's namespace. */
async function makeImageWorkSeed(rootDir: string, work: string, mode: "root" | "unshare", runner: Runner): Promise<void> {
  await makeWorkSeed(
    { srcDir: join(rootDir, "root"), path: join(work, "work-seed.ext4") },
    {
      runner: { run: (argv, opts) => runner.run(argv[0] === "mkfs.ext4" ? inTreeNamespace(mode, argv) : argv, opts) },
    },
  );
}

/** Moves the finished disks and kernel from `work` into `outDir`; returns the kernel at its new paths. */
async function moveIntoPlace(outDir: string, work: string, kernel: ImageKernel): Promise<ImageKernel> {
  await mkdir(outDir, { recursive: true });
  await rename(join(work, "rootfs.ext4"), join(outDir, "rootfs.ext4"));
  await rename(join(work, "work-seed.ext4"), join(outDir, "work-seed.ext4"));
  const kernelOut = { ...kernel, vmlinux: join(outDir, "vmlinux"), initrd: join(outDir, "initrd.img") };
  await rename(kernel.vmlinux, kernelOut.vmlinux);
  await rename(kernel.initrd, kernelOut.initrd);
  return kernelOut;
}
