/**
 * The agent's `reidentify` call, made right after a fork is restored and before it is reported
 * ready: the copy gets its own clock, RNG state, MAC and address, hostname, machine-id and SSH
 * host key, and forgets its source's neighbours. Imports nothing outside src/agent.
 */
import { appendFileSync, chmodSync, closeSync, mkdirSync, openSync, readFileSync, statfsSync, writeFileSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";

/** What the host sends; every field is checked before anything changes. */
export interface ReidentifyParams {
  hostname: string;
  ip: string;
  prefix: number;
  gateway: string;
  mac: string;
  machineId: string;
  hostKey: string;
  hostKeyPub: string;
  timeMs: number;
  /** 64 hex characters of host randomness mixed into the guest's pool before it reseeds. */
  entropy: string;
  /** The guest's network interface (default eth0). */
  iface?: string;
  /**
   * Set when the host grew the work disk (a warm start asking for a larger --disk): its size in
   * bytes. The agent waits until the device mounted at /root shows it, then grows the ext4 online.
   */
  growWorkTo?: number;
}

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const CHECKS: Array<[keyof ReidentifyParams, (v: unknown) => boolean, string]> = [
  ["hostname", (v) => typeof v === "string" && /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(v), "a DNS label"],
  ["ip", (v) => typeof v === "string" && IPV4.test(v), "an IPv4 address"],
  ["prefix", (v) => Number.isInteger(v) && (v as number) >= 8 && (v as number) <= 30, "a prefix length 8..30"],
  ["gateway", (v) => typeof v === "string" && IPV4.test(v), "an IPv4 address"],
  ["mac", (v) => typeof v === "string" && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(v), "a lowercase MAC address"],
  ["machineId", (v) => typeof v === "string" && /^[0-9a-f]{32}$/.test(v), "32 hex characters"],
  ["hostKey", (v) => typeof v === "string" && v.includes("PRIVATE KEY"), "an OpenSSH private key"],
  ["hostKeyPub", (v) => typeof v === "string" && v.startsWith("ssh-"), "an OpenSSH public key"],
  ["timeMs", (v) => Number.isFinite(v) && (v as number) > 1.5e12, "a Unix time in ms"],
  ["entropy", (v) => typeof v === "string" && /^[0-9a-f]{64}$/.test(v), "64 hex characters"],
];

/** The params, or an error naming the first bad field. */
export function parseReidentify(p: unknown): ReidentifyParams {
  if (!p || typeof p !== "object") throw new Error("reidentify needs an object of parameters");
  const o = p as Record<string, unknown>;
  for (const [key, ok, what] of CHECKS) if (!ok(o[key])) throw new Error(`reidentify: ${key} must be ${what}`);
  if (o.iface !== undefined && !(typeof o.iface === "string" && /^[a-z0-9]{1,15}$/.test(o.iface)))
    throw new Error("reidentify: iface must be an interface name");
  const g = o.growWorkTo;
  if (g !== undefined && !(Number.isSafeInteger(g) && (g as number) > 0 && (g as number) % 512 === 0))
    throw new Error("reidentify: growWorkTo must be a size in bytes (a positive multiple of 512)");
  return o as unknown as ReidentifyParams;
}

/** What the steps need from the guest. */
export interface ReidentifyDeps {
  /** Runs a command, feeding it `stdin` when given; throws with its stderr when it fails. */
  run(argv: string[], stdin?: string): Promise<void>;
  writeFile(path: string, data: string, mode?: number): Promise<void>;
  /** Mixes bytes into the kernel's pool and forces the CRNG to reseed. */
  reseed(bytes: Uint8Array): void;
  /** Steps the wall clock to this Unix time in ms. */
  setClock(ms: number): void;
  /** Makes sshd serve the new host key (see reloadSshd below). */
  reloadSshd(): Promise<void>;
  /** Reads a text file (/proc/mounts, /sys/class/block/<dev>/size). */
  readText(path: string): Promise<string>;
  /**
   * Grows the ext4 mounted at `mountpoint` to `bytes` online without a process (a restored guest
   * starts each one slowly); when absent, or when it fails, `resize2fs /dev/<dev>` runs instead.
   */
  growFs?(mountpoint: string, bytes: number): void;
  sleep(ms: number): Promise<void>;
}

/**
 * The network changes as one `ip -batch` script: a restored guest runs every new process
 * slowly (its code is not yet translated or cached), so one process instead of five.
 */
export function networkBatch(p: ReidentifyParams): string {
  const dev = p.iface ?? "eth0";
  return [
    `link set dev ${dev} address ${p.mac}`,
    `addr flush dev ${dev}`,
    `addr add ${p.ip}/${p.prefix} dev ${dev}`,
    `route replace default via ${p.gateway} dev ${dev}`,
    "neigh flush all",
    "",
  ].join("\n");
}

/** How long the grow step waits for the block device to show its new size (the config interrupt). */
export const GROW_WAIT_MS = 10_000;

/** The block device (a bare name like vdc) mounted at `mountpoint`, from /proc/mounts text. */
export function mountedDevice(mounts: string, mountpoint: string): string {
  for (const line of mounts.split("\n")) {
    const [source, target] = line.split(" ");
    if (target !== mountpoint) continue;
    const m = /^\/dev\/([a-z]+[a-z0-9]*)$/.exec(source ?? "");
    if (!m) throw new Error(`${mountpoint} is mounted from ${source}, not a block device`);
    return m[1]!;
  }
  throw new Error(`nothing is mounted at ${mountpoint}`);
}

/** Waits for the device to show at least `bytes` (sysfs counts 512-byte sectors), then grows its ext4 online. */
export async function growWork(bytes: number, deps: ReidentifyDeps, waitMs = GROW_WAIT_MS): Promise<void> {
  const dev = mountedDevice(await deps.readText("/proc/mounts"), "/root");
  let seen = 0;
  for (let waited = 0; ; waited += 50) {
    seen = Number((await deps.readText(`/sys/class/block/${dev}/size`)).trim()) * 512;
    if (seen >= bytes) break;
    if (waited >= waitMs) throw new Error(`/dev/${dev} still shows ${seen} bytes after ${waitMs} ms, not the ${bytes} the host grew it to`);
    await deps.sleep(50);
  }
  try {
    if (deps.growFs) return deps.growFs("/root", bytes);
  } catch {
    // An older kernel or another filesystem feature set: resize2fs knows the other ways.
  }
  await deps.run(["resize2fs", `/dev/${dev}`]);
}

/** The steps in order, each named for the result (and the error when one fails). */
export function reidentifySteps(p: ReidentifyParams, deps: ReidentifyDeps): Array<[string, () => Promise<void>]> {
  return [
    ["clock", async () => deps.setClock(p.timeMs)],
    ["rng", async () => deps.reseed(Buffer.from(p.entropy, "hex"))],
    ["network", () => deps.run(["ip", "-batch", "-"], networkBatch(p))],
    [
      "hostname",
      async () => {
        // Writing the proc file is sethostname(2) without a process.
        await deps.writeFile("/proc/sys/kernel/hostname", p.hostname);
        await deps.writeFile("/etc/hostname", `${p.hostname}\n`);
        await deps.writeFile("/etc/hosts", `127.0.0.1\tlocalhost\n127.0.1.1\t${p.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`);
      },
    ],
    ["machine-id", () => deps.writeFile("/etc/machine-id", `${p.machineId}\n`, 0o444)],
    [
      "ssh host key",
      async () => {
        await deps.writeFile("/etc/ssh/ssh_host_ed25519_key", p.hostKey.endsWith("\n") ? p.hostKey : `${p.hostKey}\n`, 0o600);
        await deps.writeFile("/etc/ssh/ssh_host_ed25519_key.pub", `${p.hostKeyPub.trim()}\n`, 0o644);
        await deps.reloadSshd();
      },
    ],
    ...(p.growWorkTo ? [["grow work", () => growWork(p.growWorkTo!, deps)] as [string, () => Promise<void>]] : []),
  ];
}

/** Runs every step; the answer lists them. */
export async function reidentify(params: unknown, deps: ReidentifyDeps): Promise<{ done: string[] }> {
  const p = parseReidentify(params);
  const done: string[] = [];
  for (const [name, step] of reidentifySteps(p, deps)) {
    try {
      await step();
    } catch (err) {
      throw new Error(`reidentify ${name}: ${err instanceof Error ? err.message : String(err)}`);
    }
    done.push(name);
  }
  return { done };
}

/** RNDRESEEDCRNG, _IO('R', 0x07): the CRNG takes fresh input from the pool at once. */
const RNDRESEEDCRNG = 0x5207;

/** The guest's reseed: write the bytes to /dev/urandom, then ask for a reseed (root only). */
export function reseedKernel(bytes: Uint8Array): void {
  const fd = openSync("/dev/urandom", "w");
  try {
    writeSync(fd, bytes);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { dlopen, FFIType } = require("bun:ffi") as typeof import("bun:ffi");
    const libc = dlopen("libc.so.6", { ioctl: { args: [FFIType.i32, FFIType.u64], returns: FFIType.i32 } });
    try {
      if (libc.symbols.ioctl(fd, RNDRESEEDCRNG) !== 0) throw new Error("ioctl RNDRESEEDCRNG failed (the agent must run as root)");
    } finally {
      libc.close();
    }
  } finally {
    closeSync(fd);
  }
}

/** EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64): grows a mounted ext4 to a block count (resize2fs's online path). */
const EXT4_IOC_RESIZE_FS = 0x40086610;

/** Grows the mounted ext4 at `mountpoint` to `bytes` (whole blocks) through the kernel, as root. */
export function growExt4Online(mountpoint: string, bytes: number): void {
  const { dlopen, FFIType, ptr } = require("bun:ffi") as typeof import("bun:ffi");
  const count = new BigUint64Array([BigInt(Math.floor(bytes / statfsSync(mountpoint).bsize))]);
  const libc = dlopen("libc.so.6", { ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 } });
  const fd = openSync(mountpoint, "r");
  try {
    if (libc.symbols.ioctl(fd, EXT4_IOC_RESIZE_FS, ptr(count)) !== 0) throw new Error(`ioctl EXT4_IOC_RESIZE_FS on ${mountpoint} failed`);
  } finally {
    closeSync(fd);
    libc.close();
  }
}

/** clock_settime(CLOCK_REALTIME, …) through libc: no `date` process (root only). */
export function setClockMs(ms: number): void {
  const { dlopen, FFIType, ptr } = require("bun:ffi") as typeof import("bun:ffi");
  const ts = new BigInt64Array([BigInt(Math.floor(ms / 1000)), BigInt(Math.floor(ms % 1000) * 1_000_000)]);
  const libc = dlopen("libc.so.6", { clock_settime: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 } });
  try {
    if (libc.symbols.clock_settime(0, ptr(ts)) !== 0) throw new Error("clock_settime failed (the agent must run as root)");
  } finally {
    libc.close();
  }
}

/**
 * Makes sshd use the new host key. An sshd that re-executes itself for each connection (the
 * default; `-r` turns it off) or is started per connection by a socket unit reads the key
 * files anew every time, so nothing needs doing; only a listener started with `-r` gets a
 * SIGHUP (it then re-executes with the new key).
 */
function reloadSshd(): Promise<void> {
  try {
    const pid = Number.parseInt(readFileSync("/run/sshd.pid", "utf8").trim(), 10);
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    if (pid > 1 && argv.includes("-r")) process.kill(pid, "SIGHUP");
  } catch {
    // No listener with a pid file: socket-activated, or not running; the next start reads the key.
  }
  return Promise.resolve();
}

/** The real guest: commands through Bun.spawn, files through node:fs. */
export function guestReidentifyDeps(): ReidentifyDeps {
  const run = async (argv: string[], stdin?: string) => {
    const proc = Bun.spawn(argv, { stdin: stdin === undefined ? "ignore" : new TextEncoder().encode(stdin), stdout: "ignore", stderr: "pipe" });
    const [code, err] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
    if (code !== 0) throw new Error(`${argv.join(" ")} exited ${code}: ${err.trim()}`);
  };
  return {
    run,
    writeFile: async (path, data, mode) => {
      const { writeFile, chmod } = await import("node:fs/promises");
      await writeFile(path, data);
      if (mode !== undefined) await chmod(path, mode);
    },
    reseed: reseedKernel,
    setClock: setClockMs,
    reloadSshd,
    growFs: growExt4Online,
    readText: (path) => Bun.file(path).text(),
    sleep: (ms) => Bun.sleep(ms),
  };
}

/**
 * A pretend guest's (the fake Firecracker's): files go under `root` and commands are only written
 * down in `root/commands`, so an agent serving a test socket on a host changes nothing of the host.
 */
export function pretendReidentifyDeps(root: string): ReidentifyDeps {
  const note = (line: string) => {
    mkdirSync(root, { recursive: true });
    appendFileSync(join(root, "commands"), `${line}\n`);
  };
  return {
    run: async (argv, stdin) => note([argv.join(" "), ...(stdin ?? "").split("\n").filter(Boolean)].join(" | ")),
    writeFile: async (path, data, mode) => {
      const at = join(root, path);
      mkdirSync(dirname(at), { recursive: true });
      writeFileSync(at, data);
      if (mode !== undefined) chmodSync(at, mode);
    },
    reseed: () => {},
    setClock: (ms) => note(`clock ${ms}`),
    reloadSshd: async () => note("reload sshd"),
    // The pretend guest's /proc/mounts and /sys/class/block are files its fake VMM keeps under root.
    readText: (path) => Bun.file(join(root, path)).text(),
    sleep: (ms) => Bun.sleep(ms),
  };
}
