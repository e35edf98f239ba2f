import { NFT_REQUIRED } from "./network/firewall.ts";
import { helperPath, sudoersPath } from "./network/net-helper.ts";
import { accessSync, constants, existsSync, lstatSync, readFileSync, statfsSync, type Stats } from "node:fs";
import { dirname } from "node:path";
import { createSocket } from "node:dgram";
import { loadConfig, type Config } from "../config.ts";
import type { Paths } from "./paths.ts";
import type { Runner } from "./runner.ts";
import { currentOwner, runtimeDirProblem } from "../rpc/socket-trust.ts";
import { DNS_FIX } from "./dns-hint.ts";
import { hasHardwareVirt } from "./cpu.ts";

export type CheckStatus = "pass" | "warn" | "fail";

/** One prerequisite: what was found and, when it is not a pass, what to do. */
export interface Check {
  name: string;
  status: CheckStatus;
  detail: string;
  fix?: string;
}

export interface DoctorReport {
  checks: Check[];
  accel: "kvm" | "tcg";
  summary: Record<CheckStatus, number>;
}

export interface DoctorDeps {
  paths: Paths;
  runner: Runner;
  readFile(path: string): string;
  exists(path: string): boolean;
  canOpenRW(path: string): boolean;
  which(bin: string): string | null;
  daemonStatus(): Promise<{ pid: number; buildId: string; dnsProblem?: { message: string } } | null>;
  udpPortFree(host: string, port: number): Promise<boolean>;
  freeBytes(path: string): number;
  /** Why the runtime directory cannot be trusted (another user's, a symlink, open mode), or null. */
  runtimeDirProblem(): string | null;
  /** Whether the state database has the kernel and the image registered; throws when it cannot be read. */
  registered(kernel: string, image: string): { kernel: boolean; image: boolean };
}

/** Real host probes. */
export function hostDoctorDeps(paths: Paths, runner: Runner, daemonStatus: DoctorDeps["daemonStatus"], registered: DoctorDeps["registered"]): DoctorDeps {
  return {
    paths,
    runner,
    registered,
    readFile: (p) => readFileSync(p, "utf8"),
    exists: existsSync,
    canOpenRW: (p) => {
      try {
        accessSync(p, constants.R_OK | constants.W_OK);
        return true;
      } catch {
        return false;
      }
    },
    which: (b) => Bun.which(b),
    daemonStatus,
    udpPortFree: (host, port) =>
      new Promise((resolve) => {
        const s = createSocket("udp4");
        s.once("error", () => resolve(false));
        s.bind(port, host, () => s.close(() => resolve(true)));
      }),
    runtimeDirProblem: () => {
      const st = lstatOrNull(paths.runtimeDir);
      return st ? runtimeDirProblem(st, currentOwner()) : null;
    },
    freeBytes: (p) => {
      let dir = p;
      while (!existsSync(dir) && dir !== "/") dir = dirname(dir);
      const s = statfsSync(dir);
      return s.bavail * s.bsize;
    },
  };
}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

/** True when the CPU exposes hardware virtualization (vmx or svm) and /dev/kvm opens. */
export function hardwareVirtUsable(cpuinfo: string, kvmOpens: boolean): boolean {
  return kvmOpens && hasHardwareVirt(cpuinfo);
}

/** The VMM, running as this user, opens /dev/net/tun to attach the VM's TAP. */
function tunCheck(deps: DoctorDeps): Check {
  if (!deps.exists("/dev/net/tun")) return { name: "tun", status: "fail", detail: "no /dev/net/tun", fix: "sudo modprobe tun" };
  if (!deps.canOpenRW("/dev/net/tun")) {
    return {
      name: "tun",
      status: "fail",
      detail: "/dev/net/tun exists but this user cannot open it, so a VMM cannot attach its TAP",
      fix: "sudo chmod 0666 /dev/net/tun (its usual mode; TAPs stay usable only by their owner)",
    };
  }
  return { name: "tun", status: "pass", detail: "/dev/net/tun usable" };
}

/** Runs every check; nothing here creates files or starts processes beyond version probes. */
export async function runDoctor(deps: DoctorDeps): Promise<DoctorReport> {
  const checks: Check[] = [];
  const add = (c: Check) => checks.push(c);
  const config = configCheck(deps, checks);
  const kvm = kvmCheck(deps);
  add(kvm.check);
  await checkVmms(deps, config, checks);
  add(
    deps.exists("/dev/vhost-vsock")
      ? { name: "vhost-vsock", status: "pass", detail: "/dev/vhost-vsock present" }
      : {
          name: "vhost-vsock",
          status: "warn",
          detail: "no /dev/vhost-vsock: QEMU guests use the virtio-serial agent channel",
          fix: "sudo modprobe vhost_vsock",
        },
  );
  add(tunCheck(deps));
  await checkBridge(deps, config, checks);
  checks.push(...toolChecks(deps));
  add(diskSpaceCheck(deps));
  checkArtifacts(deps, config, checks);
  await checkDaemonAndDns(deps, config, checks);
  const summary = { pass: 0, warn: 0, fail: 0 };
  for (const c of checks) summary[c.status]++;
  return { checks, accel: kvm.usable ? "kvm" : "tcg", summary };
}

/** The config file parses (or is absent: defaults); the config, or null when it does not. */
function configCheck(deps: DoctorDeps, checks: Check[]): Config | null {
  try {
    const config = loadConfig(deps.paths);
    checks.push({ name: "config", status: "pass", detail: deps.exists(deps.paths.configFile) ? deps.paths.configFile : "no config file; defaults apply" });
    return config;
  } catch (err) {
    checks.push({ name: "config", status: "fail", detail: (err as Error).message, fix: `Fix ${deps.paths.configFile}` });
    return null;
  }
}

/** Whether KVM is usable here, and the check saying so (or what is missing). */
function kvmCheck(deps: DoctorDeps): { usable: boolean; check: Check } {
  const cpuinfo = safeRead(deps, "/proc/cpuinfo");
  const kvmExists = deps.exists("/dev/kvm");
  const kvmOpens = kvmExists && deps.canOpenRW("/dev/kvm");
  if (hardwareVirtUsable(cpuinfo, kvmOpens))
    return { usable: true, check: { name: "kvm", status: "pass", detail: "/dev/kvm usable with hardware virtualization" } };
  if (kvmExists && !kvmOpens && hasHardwareVirt(cpuinfo))
    return {
      usable: false,
      check: {
        name: "kvm",
        status: "fail",
        detail: "/dev/kvm exists but this user cannot open it",
        fix: "Add yourself to the kvm group: sudo usermod -aG kvm $USER (then log in again)",
      },
    };
  return {
    usable: false,
    check: {
      name: "kvm",
      status: "warn",
      detail: kvmExists
        ? "/dev/kvm present but the CPU shows no vmx/svm flag: no usable hardware virtualization; QEMU will use TCG (slow), Firecracker cannot run"
        : "no /dev/kvm: QEMU will use TCG (slow), Firecracker cannot run",
      fix: "Enable virtualization (VT-x/AMD-V) in firmware, or nested virtualization on the hypervisor",
    },
  };
}

/** The host tools banger runs: missing ones fail, or warn for those only some commands need. */
function toolChecks(deps: DoctorDeps): Check[] {
  const tools = [
    ["e2fsprogs", ["mkfs.ext4", "debugfs", "resize2fs", "e2fsck"], "e2fsprogs"],
    ["mmdebstrap", ["mmdebstrap"], "mmdebstrap"],
    ["ssh", ["ssh", "ssh-keygen"], "openssh-client"],
    ["zstd", ["zstd"], "zstd"],
  ] as const;
  return tools.map(([name, bins, pkg]): Check => {
    const missing = bins.filter((b) => !deps.which(b));
    return missing.length
      ? {
          name,
          status: name === "mmdebstrap" || name === "zstd" ? "warn" : "fail",
          detail: `missing: ${missing.join(", ")}`,
          fix: `sudo apt-get install ${pkg}`,
        }
      : { name, status: "pass", detail: bins.join(", ") };
  });
}

function diskSpaceCheck(deps: DoctorDeps): Check {
  const free = deps.freeBytes(deps.paths.stateDir);
  const gib = (free / 1024 ** 3).toFixed(1);
  return {
    name: "disk space",
    status: free > 10 * 1024 ** 3 ? "pass" : free > 2 * 1024 ** 3 ? "warn" : "fail",
    detail: `${gib} GiB free for ${deps.paths.stateDir}`,
    fix: free > 10 * 1024 ** 3 ? undefined : "Free space or point XDG_STATE_HOME elsewhere",
  };
}

function safeRead(deps: DoctorDeps, path: string): string {
  try {
    return deps.readFile(path);
  } catch {
    return "";
  }
}

async function checkVmms(deps: DoctorDeps, config: Config | null, checks: Check[]) {
  const fc = config?.firecracker_bin ?? "firecracker";
  const qemu = config?.qemu_bin ?? "qemu-system-x86_64";
  const fcPath = deps.which(fc);
  const qemuPath = deps.which(qemu);
  const ver = async (argv: string[]) => {
    const r = await deps.runner.run(argv, { allowFailure: true, timeoutMs: 5000 }).catch(() => null);
    return r?.stdout.split("\n")[0]?.trim() || "unknown version";
  };
  checks.push(
    fcPath
      ? { name: "firecracker", status: "pass", detail: `${fcPath}: ${await ver([fcPath, "--version"])}` }
      : {
          name: "firecracker",
          status: qemuPath ? "warn" : "fail",
          detail: `${fc} not found${qemuPath ? "; QEMU will be used" : ""}`,
          fix: 'Install Firecracker and set firecracker_bin, or use vmm = "qemu"',
        },
  );
  checks.push(
    qemuPath
      ? { name: "qemu", status: "pass", detail: `${qemuPath}: ${await ver([qemuPath, "--version"])}` }
      : { name: "qemu", status: fcPath ? "warn" : "fail", detail: `${qemu} not found`, fix: "sudo apt-get install qemu-system-x86" },
  );
}

async function checkBridge(deps: DoctorDeps, config: Config | null, checks: Check[]) {
  const bridge = config?.bridge ?? "banger0";
  const up = deps.exists(`/sys/class/net/${bridge}`);
  checks.push(
    up
      ? { name: "bridge/NAT", status: "pass", detail: `bridge ${bridge} present` }
      : { name: "bridge/NAT", status: "warn", detail: `not set up yet: no bridge ${bridge}`, fix: "sudo banger host setup" },
  );
  checks.push(
    deps.which("nft")
      ? { name: "nftables", status: "pass", detail: "nft present" }
      : { name: "nftables", status: "fail", detail: `no nft: ${NFT_REQUIRED}`, fix: "sudo apt-get install nftables" },
  );
  // A daemon that is not root changes per-VM rules only through the helper host setup installs.
  if (up && process.getuid?.() !== 0) {
    const ok = deps.exists(helperPath(bridge)) && deps.exists(sudoersPath(bridge));
    checks.push(
      ok
        ? { name: "firewall helper", status: "pass", detail: helperPath(bridge) }
        : {
            name: "firewall helper",
            status: "fail",
            detail: `no ${helperPath(bridge)} or ${sudoersPath(bridge)}: VMs cannot get their firewall rules`,
            fix: "sudo banger host setup",
          },
    );
  }
}

function checkArtifacts(deps: DoctorDeps, config: Config | null, checks: Check[]) {
  const image = config?.default_image ?? "bookworm";
  const kernel = config?.default_kernel ?? "default";
  let found: { kernel: boolean; image: boolean };
  try {
    found = deps.registered(kernel, image);
  } catch (err) {
    checks.push({ name: "state database", status: "fail", detail: (err as Error).message, fix: "Move the file aside to start with an empty state" });
    return;
  }
  const { kernel: hasKernel, image: hasImage } = found;
  checks.push(
    hasKernel
      ? { name: "default kernel", status: "pass", detail: kernel }
      : {
          name: "default kernel",
          status: "warn",
          detail: `not set up yet: kernel ${kernel} not registered`,
          fix: config?.kernel_catalog ? `banger kernel pull ${kernel}` : "banger kernel import <vmlinux> --name default, or banger kernel build",
        },
  );
  checks.push(
    hasImage
      ? { name: "default image", status: "pass", detail: image }
      : {
          name: "default image",
          status: "warn",
          detail: `not set up yet: image ${image} not present${config?.image_catalog ? " (pulled on first vm create)" : ""}`,
          fix: config?.image_catalog ? `banger image pull ${image}` : "banger image build",
        },
  );
}

/** The socket's directory must be the user's own: otherwise another user could answer as the daemon. */
function runtimeDirCheck(deps: DoctorDeps): Check {
  const dir = deps.paths.runtimeDir;
  const why = deps.runtimeDirProblem();
  if (!why) return { name: "runtime dir", status: "pass", detail: `${dir} (private to you, or made so on first use)` };
  return {
    name: "runtime dir",
    status: "fail",
    detail: `${dir} ${why}; banger refuses to use it`,
    fix: `Remove it (as its owner or root: rm -r ${dir}), or set XDG_RUNTIME_DIR to a directory only you can write (or unset it)`,
  };
}

async function checkDaemonAndDns(deps: DoctorDeps, config: Config | null, checks: Check[]) {
  checks.push(runtimeDirCheck(deps));
  const status = await deps.daemonStatus().catch(() => null);
  checks.push(
    status
      ? { name: "daemon", status: "pass", detail: `running, pid ${status.pid}, build ${status.buildId}` }
      : { name: "daemon", status: "pass", detail: "not running; starts automatically on first use" },
  );
  const listen = config?.dns_listen ?? "127.0.0.1:42069";
  const [host, port] = [listen.slice(0, listen.lastIndexOf(":")), Number(listen.slice(listen.lastIndexOf(":") + 1))];
  if (status?.dnsProblem)
    return checks.push({ name: "dns port", status: "fail", detail: `the daemon runs without .vm DNS: ${status.dnsProblem.message}`, fix: DNS_FIX });
  if (status) return checks.push({ name: "dns port", status: "pass", detail: `${listen} served by the daemon` });
  const free = await deps.udpPortFree(host, port);
  checks.push(
    free
      ? { name: "dns port", status: "pass", detail: `${listen} free` }
      : { name: "dns port", status: "fail", detail: `${listen} is taken by another program (another user's banger daemon, perhaps)`, fix: DNS_FIX },
  );
}
