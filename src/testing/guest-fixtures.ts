import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { hostRunner } from "../host/runner";
import { IMAGE_PACKAGES } from "../images/build.ts";
import { QemuDriver } from "../vm/drivers/qemu";
import type { BootPlan, DriveSpec, VmmHandle } from "../vm/drivers/types";
import { hasBin, hasFile, isRoot, sharedDir, testCacheDir } from "./skip";

/** Bump when the package list or the tree preparation changes; it keys the cache. */
const ROOTFS_VERSION = "bookworm-1";
/** The image's own packages plus the tools the tests call in the guest. */
const ROOTFS_PACKAGES = [...IMAGE_PACKAGES, "iputils-ping", "dnsutils"];
const KERNEL_NAME = "vmlinux-6.1.192";

/** What `sshd -T` shows in a banger image beyond PermitRootLogin: keys only, strict modes, normal logging. */
export const SSHD_HARDENED = [
  "pubkeyauthentication yes",
  "passwordauthentication no",
  "kbdinteractiveauthentication no",
  "authorizedkeysfile /root/.ssh/authorized_keys",
  "strictmodes yes",
  "loglevel INFO",
];

/**
 * The start of a hand-made QEMU microvm command line (TCG, one vCPU, 1 GiB, no defaults, no
 * display), for tests that boot a guest without banger; they add their drives and devices.
 */
export function rawMicrovmArgv(kernel: string, append: string): string[] {
  return [
    "qemu-system-x86_64",
    "-M",
    "microvm",
    "-accel",
    "tcg",
    "-cpu",
    "max",
    "-smp",
    "1",
    "-m",
    "1024",
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-kernel",
    kernel,
    "-append",
    append,
  ];
}

/** Prerequisites of a real-guest test, for testNeeds(name, guestChecks(), …). */
export function guestChecks(): Array<[boolean, string]> {
  return [
    [hasBin("qemu-system-x86_64"), "needs qemu-system-x86_64 (apt-get install qemu-system-x86)"],
    [hasBin("mmdebstrap"), "needs mmdebstrap to build the test rootfs"],
    [hasBin("zstd"), "needs zstd to unpack the fixture kernel"],
    [hasBin("mkfs.ext4") && hasBin("debugfs"), "needs e2fsprogs (mkfs.ext4, debugfs)"],
    [hasFile(join(sharedDir, "kernels", `${KERNEL_NAME}.zst`)), `needs the fixture kernel ${KERNEL_NAME}.zst`],
    [isRoot, "needs root (mmdebstrap and the rootfs tree keep root ownership)"],
  ];
}

/**
 * Runs `build` once across concurrent test processes: a mkdir lock beside `target`,
 * taken over when its owner pid is gone. Returns `target`.
 */
export async function buildOnce(target: string, build: (tmp: string) => Promise<void>, waitMs = 600_000): Promise<string> {
  mkdirSync(dirname(target), { recursive: true });
  const lock = `${target}.lock`;
  const deadline = Date.now() + waitMs;
  while (!existsSync(target)) {
    try {
      mkdirSync(lock);
    } catch {
      const owner = Number(readIfExists(join(lock, "pid")));
      if (owner && !isPidAlive(owner)) rmSync(lock, { recursive: true, force: true });
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}; remove it if no build runs`);
      await Bun.sleep(250);
      continue;
    }
    try {
      writeFileSync(join(lock, "pid"), String(process.pid));
      if (existsSync(target)) break;
      const tmp = `${target}.tmp-${process.pid}`;
      rmSync(tmp, { recursive: true, force: true });
      try {
        await build(tmp);
        renameSync(tmp, target);
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
    } finally {
      rmSync(lock, { recursive: true, force: true });
    }
  }
  return target;
}

function readIfExists(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

function isPidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The fixture guest kernel (uncompressed ELF vmlinux), unpacked once into the test cache. */
export function testKernel(): Promise<string> {
  return buildOnce(join(testCacheDir, KERNEL_NAME), async (tmp) => {
    await hostRunner.run(["zstd", "-q", "-d", "-f", join(sharedDir, "kernels", `${KERNEL_NAME}.zst`), "-o", tmp]);
  });
}

/** A Debian bookworm minbase rootfs tarball (mmdebstrap, ~30 s the first time), cached. */
export function testRootfsTar(): Promise<string> {
  return buildOnce(join(testCacheDir, `rootfs-${ROOTFS_VERSION}.tar`), async (tmp) => {
    await hostRunner.run(["mmdebstrap", "--quiet", "--variant=minbase", `--include=${ROOTFS_PACKAGES.join(",")}`, "--format=tar", "bookworm", tmp], {
      timeoutMs: 600_000,
    });
  });
}

/**
 * The tarball unpacked once into a tree, because mkfs.ext4 -d in e2fsprogs 1.47.0 takes
 * a directory only. Callers must treat it as read-only.
 */
export async function testRootfsTree(): Promise<string> {
  const tar = await testRootfsTar();
  return buildOnce(join(testCacheDir, `rootfs-${ROOTFS_VERSION}.d`), async (tmp) => {
    mkdirSync(tmp);
    await hostRunner.run(["tar", "-xpf", tar, "-C", tmp, "--numeric-owner"]);
    writeFileSync(join(tmp, "etc", "hostname"), "guest\n");
  });
}

/** An ed25519 key pair generated once for logging in to test guests as root. */
export async function testSshKey(): Promise<{ privateKeyPath: string; publicKey: string }> {
  const path = join(testCacheDir, "ssh", "id_ed25519");
  await buildOnce(path, async (tmp) => {
    await hostRunner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "banger-test", "-f", tmp]);
    renameSync(`${tmp}.pub`, `${path}.pub`);
  });
  return { privateKeyPath: path, publicKey: readFileSync(`${path}.pub`, "utf8").trim() };
}

/** A file (or symlink) to place into a test image, owned by root. */
export interface ExtraFile {
  path: string;
  content?: string | Uint8Array;
  fromFile?: string;
  /** Permission bits; default 0o644. */
  mode?: number;
  /** Makes a symlink to this target instead of a file (e.g. to enable a systemd unit). */
  symlink?: string;
}

/**
 * A fresh ext4 root image from the test rootfs plus `extraFiles`, with the test SSH key
 * in /root/.ssh/authorized_keys. It lives in its own temp dir: remove it with
 * removeTestRootfs(image). The guest has no network unless the test gives it a TAP.
 */
export async function makeTestRootfs(opts: { extraFiles?: ExtraFile[]; sizeMiB?: number } = {}): Promise<string> {
  const tree = await testRootfsTree();
  const key = await testSshKey();
  const dir = mkdtempSync(join(tmpdir(), "banger-rootfs-"));
  const image = join(dir, "rootfs.ext4");
  try {
    await hostRunner.run(["truncate", "-s", `${opts.sizeMiB ?? 1024}M`, image]);
    await hostRunner.run(["mkfs.ext4", "-q", "-F", "-d", tree, image]);
    const files: ExtraFile[] = [{ path: "/root/.ssh/authorized_keys", content: `${key.publicKey}\n`, mode: 0o600 }, ...(opts.extraFiles ?? [])];
    await injectFiles(image, files, dir);
    return image;
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Removes an image made by makeTestRootfs together with its temp dir. */
export function removeTestRootfs(image: string): void {
  rmSync(dirname(image), { recursive: true, force: true });
}

/** Writes files into an unmounted ext4 image with debugfs (no mount, no root needed for this step). */
async function injectFiles(image: string, files: ExtraFile[], scratch: string): Promise<void> {
  const cmds: string[] = [];
  const made = new Set<string>();
  files.forEach((f, i) => {
    if (!f.path.startsWith("/") || /[\s"]/.test(f.path)) throw new Error(`extra file path must be absolute without spaces or quotes: ${f.path}`);
    const parts = f.path.split("/").slice(1, -1);
    for (let n = 1; n <= parts.length; n++) {
      const d = `/${parts.slice(0, n).join("/")}`;
      if (made.has(d)) continue;
      made.add(d);
      // mkdir fails harmlessly for existing directories; /root/.ssh must be 0700 for sshd.
      cmds.push(`mkdir ${d}`);
      if (d === "/root/.ssh") cmds.push(`sif ${d} mode 040700`);
    }
    cmds.push(`rm ${f.path}`);
    if (f.symlink !== undefined) {
      cmds.push(`symlink ${f.path} ${f.symlink}`);
      return;
    }
    const src = f.fromFile ?? join(scratch, `extra-${i}`);
    if (f.fromFile === undefined) writeFileSync(src, f.content ?? "");
    statSync(src);
    cmds.push(`write ${src} ${f.path}`, `sif ${f.path} mode 0${(0o100000 | (f.mode ?? 0o644)).toString(8)}`);
    cmds.push(`sif ${f.path} uid 0`, `sif ${f.path} gid 0`);
  });
  const script = join(scratch, "debugfs.cmds");
  writeFileSync(script, `${cmds.join("\n")}\n`);
  try {
    await hostRunner.run(["debugfs", "-w", "-f", script, image]);
  } finally {
    for (const f of readdirSync(scratch)) if (f.startsWith("extra-") || f === "debugfs.cmds") rmSync(join(scratch, f));
  }
}

/** Waits until `pattern` shows in a guest's console log; returns how many milliseconds that took. */
export async function waitForConsoleLog(consoleLog: string, pattern: RegExp, timeoutMs = 120_000): Promise<number> {
  const t0 = Date.now();
  for (const deadline = t0 + timeoutMs; Date.now() < deadline; await Bun.sleep(100)) {
    if (pattern.test(readIfExists(consoleLog))) return Date.now() - t0;
  }
  throw new Error(`guest console never showed ${pattern} within ${timeoutMs} ms; last lines:\n${readIfExists(consoleLog).slice(-2000)}`);
}

/** A QEMU guest booted for a test; dispose() kills it and removes its directory. */
export interface TestGuest {
  dir: string;
  plan: BootPlan;
  driver: QemuDriver;
  handle: VmmHandle;
  /** Milliseconds from start() returning to the pattern's first appearance on the serial console. */
  waitForConsole(pattern: RegExp, timeoutMs?: number): Promise<number>;
  consoleText(): string;
  dispose(): Promise<void>;
}

/**
 * Boots `image` (first drive, read-write) plus `extraDrives` under QEMU microvm with the
 * fixture kernel, TCG unless KVM really works. The caller disposes the guest and removes the image.
 */
export async function bootTestGuest(opts: {
  image: string;
  extraDrives?: DriveSpec[];
  nic?: BootPlan["nic"];
  extraBootArgs?: string;
  cpus?: number;
  memoryMib?: number;
  driver?: QemuDriver;
}): Promise<TestGuest> {
  const dir = mkdtempSync(join(tmpdir(), "banger-guest-"));
  const driver = opts.driver ?? new QemuDriver({ accel: "auto", warn: () => {} });
  const plan: BootPlan = {
    vmId: `test-${dir.slice(-6)}`,
    dir,
    kernelPath: await testKernel(),
    extraBootArgs: opts.extraBootArgs ?? "",
    drives: [{ id: "root", path: opts.image, readOnly: false }, ...(opts.extraDrives ?? [])],
    nic: opts.nic,
    cpus: opts.cpus ?? 2,
    memoryMib: opts.memoryMib ?? 1024,
    cid: 3,
    consoleLog: join(dir, "console.log"),
    vmmLog: join(dir, "vmm.log"),
    memoryFile: join(dir, "ram"),
  };
  let handle: VmmHandle;
  try {
    handle = await driver.start(plan);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const started = Date.now();
  const consoleText = () => readIfExists(plan.consoleLog);
  return {
    dir,
    plan,
    driver,
    handle,
    consoleText,
    async waitForConsole(pattern, timeoutMs = 120_000) {
      await waitForConsoleLog(plan.consoleLog, pattern, timeoutMs);
      return Date.now() - started;
    },
    async dispose() {
      await driver.kill(handle).catch(() => {});
      await driver.cleanup(handle, dir);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
