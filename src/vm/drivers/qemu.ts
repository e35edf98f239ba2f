import { spawn } from "node:child_process";
import { existsSync, openSync, closeSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { BangerError } from "../../errors";
import { logTail } from "../../host/tail.ts";
import { type AccelChoice, type AccelDeps, type Accel, chooseAccel, hostAccelDeps, hostTscKhz } from "./accel";
import { cmdline, findByArgs, isAlive, isSameProcess, signal, startTime, startedAt, systemClock, waitForExit, type Clock } from "./process";
import { QmpClient, qmpCall } from "./qmp";
import { qemuBinaryVersion, qemuLoadState, qemuRestoreProblem, qemuSaveState } from "./qemu-state";
import type { BootPlan, Driver, DriveSpec, VmmHandle, VmmState, AgentStream, RestoreOptions, SavedStateFiles, SavedStateMeta } from "./types";

/** The virtio-serial port name the guest agent opens as /dev/virtio-ports/<name>. */
export const AGENT_PORT_NAME = "org.banger.agent";

/** Per-run files QEMU creates in the VM directory. */
export function qemuFiles(dir: string) {
  return { qmp: join(dir, "qmp.sock"), agent: join(dir, "agent.sock"), pidfile: join(dir, "qemu.pid") };
}

/** QEMU option values use "," as a separator; a literal comma is written twice. */
export function qemuEscape(value: string): string {
  return value.replaceAll(",", ",,");
}

/** The `-qmp` value; rediscovery looks for exactly this argument. */
export function qmpArg(dir: string): string {
  return `unix:${qemuEscape(qemuFiles(dir).qmp)},server=on,wait=off`;
}

/** Options for building the QEMU command line. */
export interface QemuArgvOptions {
  bin: string;
  accel: Accel;
  /** Use vhost-vsock for the agent (only where /dev/vhost-vsock exists); else virtio-serial. */
  vhostVsock: boolean;
  /** Host TSC rate for TCG guests (tsc_early_khz), so a busy host cannot hang their boot. */
  tscKhz?: number | null;
  /** Map the RAM file copy-on-write (a fork reading a frozen copy); default shared. */
  privateMemory?: boolean;
  /** Wait for `migrate-incoming` instead of booting the kernel (a restore). */
  incoming?: boolean;
}

/**
 * The full QEMU microvm argv for a plan. Drives become virtio-mmio block devices in plan
 * order; QEMU 7.2 with this kernel enumerates them in command-line order, so
 * plan.drives[i] is /dev/vd{a,b,c…}[i] (checked by the e2e test).
 */
export function buildQemuArgv(plan: BootPlan, opts: QemuArgvOptions): string[] {
  if (plan.drives.length === 0) throw new BangerError("invalid_argument", `VM ${plan.vmId} has no drives; the first drive is the root filesystem`);
  const files = qemuFiles(plan.dir);
  const root = plan.drives[0]!;
  const tsc = opts.accel === "tcg" && opts.tscKhz ? ` tsc_early_khz=${opts.tscKhz}` : "";
  const append = `console=ttyS0 reboot=k panic=1 root=/dev/vda ${root.readOnly ? "ro" : "rw"}${tsc} ${plan.extraBootArgs}`.trim();
  const argv = [
    opts.bin,
    "-name",
    plan.vmId,
    // acpi=on gives the guest the ACPI power button that system_powerdown presses.
    "-M",
    "microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=on,memory-backend=mem",
    "-accel",
    opts.accel,
    "-cpu",
    opts.accel === "kvm" ? "host" : "max",
    "-smp",
    String(plan.cpus),
    "-m",
    String(plan.memoryMib),
    // RAM lives in a shared file in the VM directory: suspend then saves only device state (x-ignore-shared).
    "-object",
    `memory-backend-file,id=mem,mem-path=${qemuEscape(plan.memoryFile)},size=${plan.memoryMib}M,share=${opts.privateMemory ? "off" : "on"}`,
    // -display none rather than -nographic: QEMU runs detached with no terminal.
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-kernel",
    plan.kernelPath,
    ...(plan.initrdPath ? ["-initrd", plan.initrdPath] : []),
    "-append",
    append,
    ...deviceArgs(plan, opts.vhostVsock),
  ];
  // append=on keeps earlier boots' console output across stop/start.
  argv.push("-chardev", `file,id=con,path=${qemuEscape(plan.consoleLog)},append=on`, "-serial", "chardev:con");
  argv.push("-qmp", qmpArg(plan.dir), "-pidfile", files.pidfile);
  if (opts.incoming) argv.push("-incoming", "defer");
  return argv;
}

/** The drives (in plan order), the NIC and the agent's channel: vhost-vsock, or a virtio-serial port on a socket. */
function deviceArgs(plan: BootPlan, vhostVsock: boolean): string[] {
  const argv: string[] = [];
  for (const d of plan.drives) {
    const ro = d.readOnly ? "on" : "off";
    argv.push("-drive", `id=disk-${d.id},file=${qemuEscape(d.path)},format=raw,if=none,readonly=${ro}`);
    argv.push("-device", `virtio-blk-device,drive=disk-${d.id}`);
  }
  if (plan.nic) {
    argv.push("-netdev", `tap,id=n0,ifname=${plan.nic.tap},script=no,downscript=no`);
    argv.push("-device", `virtio-net-device,netdev=n0,mac=${plan.nic.mac}`);
  }
  if (vhostVsock) {
    argv.push("-device", `vhost-vsock-device,guest-cid=${plan.cid}`);
  } else {
    argv.push("-device", "virtio-serial-device");
    argv.push("-chardev", `socket,id=ag,path=${qemuEscape(qemuFiles(plan.dir).agent)},server=on,wait=off`);
    argv.push("-device", `virtserialport,chardev=ag,name=${AGENT_PORT_NAME}`);
  }
  return argv;
}

/** What the QEMU driver needs from the host. */
export interface QemuDriverDeps {
  bin?: string;
  accel: AccelChoice;
  warn(msg: string): void;
  readFile?: AccelDeps["readFile"];
  canOpenKvm?: AccelDeps["canOpenKvm"];
  /** True when /dev/vhost-vsock exists (default: checks the host). */
  hasVhostVsock?: () => boolean;
  clock?: Clock;
  /** How long QEMU may take to open its QMP socket (default 10 s). */
  startTimeoutMs?: number;
}

/** Bound on every single QMP exchange so stop/kill/state never hang. */
const QMP_TIMEOUT_MS = 2000;

/** Runs VMs with `qemu-system-x86_64 -M microvm`, controlled over QMP. */
export class QemuDriver implements Driver {
  readonly kind = "qemu" as const;
  private readonly bin: string;
  private readonly clock: Clock;
  private accel: Accel | null = null;
  private version: string | null = null;

  constructor(private readonly deps: QemuDriverDeps) {
    this.bin = deps.bin ?? "qemu-system-x86_64";
    this.clock = deps.clock ?? systemClock;
  }

  /** The accelerator this driver uses, detected once (warns when falling back to TCG). */
  resolveAccel(): Accel {
    this.accel ??= chooseAccel(this.deps.accel, {
      readFile: this.deps.readFile ?? hostAccelDeps.readFile,
      canOpenKvm: this.deps.canOpenKvm ?? hostAccelDeps.canOpenKvm,
      warn: this.deps.warn,
    });
    return this.accel;
  }

  async start(plan: BootPlan): Promise<VmmHandle> {
    // A cold boot never reads old RAM; dropping the file frees its disk space.
    rmSync(plan.memoryFile, { force: true });
    return this.launch(plan, {});
  }

  /** Spawns QEMU for the plan and waits for QMP; on failure nothing it started is left behind. */
  private async launch(plan: BootPlan, extra: { incoming?: boolean; privateMemory?: boolean }, ready?: (qmp: string) => Promise<void>): Promise<VmmHandle> {
    const vhostVsock = (this.deps.hasVhostVsock ?? (() => existsSync("/dev/vhost-vsock")))();
    const tscKhz = hostTscKhz((this.deps.readFile ?? hostAccelDeps.readFile)("/proc/cpuinfo") ?? "");
    const argv = buildQemuArgv(plan, { bin: this.bin, accel: this.resolveAccel(), vhostVsock, tscKhz, ...extra });
    if (findByArgs("-qmp", qmpArg(plan.dir)).some(isAlive)) {
      throw new BangerError("already_exists", `a QEMU process for VM ${plan.vmId} is already running`, {
        hint: `Stop it first (banger vm stop ${plan.vmId}) or kill it (banger vm kill ${plan.vmId}).`,
      });
    }
    await this.cleanup(null, plan.dir);
    const pid = this.spawnDetached(argv, plan.vmmLog);
    const files = qemuFiles(plan.dir);
    try {
      await this.waitForQmp(pid, files.qmp, plan.vmmLog);
      await ready?.(files.qmp);
    } catch (err) {
      signal(pid, "SIGKILL");
      await waitForExit(pid, 3000, this.clock);
      await this.cleanup(null, plan.dir);
      if (err instanceof BangerError && !isAlive(pid))
        throw new BangerError(err.code, `${err.message} (QEMU: ${logTail(plan.vmmLog)})`, { hint: err.hint, cause: err });
      throw err;
    }
    return {
      vmm: "qemu",
      pid,
      pidStartTime: startTime(pid),
      controlSocket: files.qmp,
      agent: vhostVsock ? { kind: "vhost-vsock", path: "", cid: plan.cid } : { kind: "virtio-serial", path: files.agent },
      startedAt: new Date(this.clock.now()).toISOString(),
    };
  }

  async pause(handle: VmmHandle): Promise<void> {
    await qmpCall(handle.controlSocket, "stop", QMP_TIMEOUT_MS);
  }

  async resume(handle: VmmHandle): Promise<void> {
    await qmpCall(handle.controlSocket, "cont", QMP_TIMEOUT_MS);
  }

  /** Saves device state (RAM is already in the shared file), then quits QEMU. */
  async suspend(handle: VmmHandle, files: SavedStateFiles): Promise<SavedStateMeta> {
    rmSync(files.state, { force: true });
    const meta = await qemuSaveState(handle.controlSocket, files, this.resolveAccel(), this.clock);
    await this.kill(handle);
    return meta;
  }

  /** Device state by migration (vCPUs stopped), then a sparse copy of the RAM file taken while paused. */
  async snapshot(handle: VmmHandle, files: SavedStateFiles, liveMemory: string): Promise<SavedStateMeta> {
    rmSync(files.state, { force: true });
    const meta = await qemuSaveState(handle.controlSocket, files, this.resolveAccel(), this.clock);
    if (files.memory !== liveMemory) await sparseCopy(liveMemory, files.memory);
    return meta;
  }

  async restoreProblem(meta: SavedStateMeta): Promise<string | null> {
    this.version ??= qemuBinaryVersion(this.bin);
    return qemuRestoreProblem(meta, this.version, this.resolveAccel());
  }

  /** Starts QEMU waiting for incoming state, loads files.state over the plan's RAM file, and runs the guest. */
  async restore(plan: BootPlan, files: SavedStateFiles, opts: RestoreOptions = {}): Promise<VmmHandle> {
    if (!existsSync(files.memory))
      throw new BangerError("not_found", `the saved RAM file ${files.memory} is missing`, { hint: "Start the VM cold instead (banger vm start --cold)." });
    const restorePlan = { ...plan, memoryFile: files.memory };
    const nic = opts.linkDown && plan.nic ? "n0" : undefined;
    return this.launch(restorePlan, { incoming: true, privateMemory: opts.privateMemory }, (qmp) => qemuLoadState(qmp, files, this.clock, nic));
  }

  forkProblem(): string | null {
    return null;
  }

  /** QMP `block_resize` of the drive's backend: QEMU sets the file to that size and interrupts the guest. */
  async growDrive(handle: VmmHandle, _dir: string, drive: DriveSpec, bytes: number): Promise<void> {
    await qmpCall(handle.controlSocket, "block_resize", QMP_TIMEOUT_MS, { device: `disk-${drive.id}`, size: bytes });
  }

  async setLink(handle: VmmHandle, up: boolean): Promise<void> {
    await qmpCall(handle.controlSocket, "set_link", QMP_TIMEOUT_MS, { name: "n0", up });
  }

  /** Starts QEMU in its own session with output to the vmm log, so it outlives the daemon. */
  private spawnDetached(argv: string[], vmmLog: string): number {
    const log = openSync(vmmLog, "a");
    try {
      const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ["ignore", log, log] });
      child.on("error", () => {}); // a missing binary shows up as the process being gone
      child.unref();
      if (child.pid === undefined) {
        throw new BangerError("not_available", `could not run ${argv[0]}`, {
          hint: "Install QEMU (apt-get install qemu-system-x86) or set the QEMU binary in config.toml; see `banger doctor`.",
        });
      }
      return child.pid;
    } finally {
      closeSync(log);
    }
  }

  /** Waits until QMP answers; fails early with the log's last lines when QEMU exits. */
  private async waitForQmp(pid: number, qmp: string, vmmLog: string): Promise<void> {
    const deadline = this.clock.now() + (this.deps.startTimeoutMs ?? 10_000);
    while (this.clock.now() < deadline) {
      if (!isAlive(pid)) {
        throw new BangerError("failed_precondition", `QEMU exited during start-up: ${logTail(vmmLog)}`, {
          hint: `See ${vmmLog} for QEMU's own message.`,
        });
      }
      if (existsSync(qmp)) {
        try {
          (await QmpClient.open(qmp, QMP_TIMEOUT_MS)).close();
          return;
        } catch {
          // not listening yet
        }
      }
      await this.clock.sleep(20);
    }
    throw new BangerError("timeout", `QEMU did not open its QMP socket ${qmp} in time`, { hint: `See ${vmmLog}.` });
  }

  async stop(handle: VmmHandle, graceMs: number): Promise<"graceful" | "killed" | "already-exited"> {
    if (!isSameProcess(handle.pid, handle.pidStartTime)) return "already-exited";
    const pressed = await qmpCall(handle.controlSocket, "system_powerdown", QMP_TIMEOUT_MS).then(
      () => true,
      () => false,
    );
    if (pressed && (await waitForExit(handle.pid, graceMs, this.clock, handle.pidStartTime))) return "graceful";
    await this.kill(handle);
    return "killed";
  }

  async kill(handle: VmmHandle): Promise<void> {
    if (!isSameProcess(handle.pid, handle.pidStartTime)) return;
    // quit lets QEMU flush its disks; SIGKILL is the bound when QMP is stuck.
    await qmpCall(handle.controlSocket, "quit", QMP_TIMEOUT_MS).catch(() => {});
    if (await waitForExit(handle.pid, 2000, this.clock, handle.pidStartTime)) return;
    signal(handle.pid, "SIGKILL");
    if (!(await waitForExit(handle.pid, 5000, this.clock, handle.pidStartTime))) {
      throw new BangerError("internal", `QEMU pid ${handle.pid} survived SIGKILL`, { hint: "Check the host for a stuck process (ps -o stat)." });
    }
  }

  async state(handle: VmmHandle): Promise<VmmState> {
    if (!isSameProcess(handle.pid, handle.pidStartTime)) return "exited";
    const status = (await qmpCall(handle.controlSocket, "query-status", QMP_TIMEOUT_MS)) as { status?: string };
    return qemuStatusToState(status.status ?? "");
  }

  async rediscover(vmId: string, dir: string): Promise<VmmHandle | null> {
    const files = qemuFiles(dir);
    for (const pid of findByArgs("-qmp", qmpArg(dir))) {
      const argv = cmdline(pid) ?? [];
      if (!isAlive(pid) || !argv.includes(vmId)) continue;
      try {
        await qmpCall(files.qmp, "query-status", QMP_TIMEOUT_MS);
      } catch {
        continue;
      }
      const vsock = argv.find((a) => a.startsWith("vhost-vsock-device,"));
      const cid = vsock ? Number(/guest-cid=(\d+)/.exec(vsock)?.[1]) : undefined;
      return {
        vmm: "qemu",
        pid,
        pidStartTime: startTime(pid),
        controlSocket: files.qmp,
        agent: vsock ? { kind: "vhost-vsock", path: "", cid } : { kind: "virtio-serial", path: files.agent },
        startedAt: startedAt(pid),
      };
    }
    return null;
  }

  /** The guest agent's stream. QEMU's virtio-serial socket holds one client at a time; `port` applies to vsock only. */
  async connectAgent(handle: VmmHandle, _port: number): Promise<AgentStream> {
    if (handle.agent.kind !== "virtio-serial") {
      throw new BangerError("unavailable", "connecting to a guest over vhost-vsock is not supported by this build", {
        hint: "Remove /dev/vhost-vsock access or use the Firecracker driver; QEMU then uses the virtio-serial agent channel.",
      });
    }
    return connectUnix(handle.agent.path, 3000);
  }

  async cleanup(_handle: VmmHandle | null, dir: string): Promise<void> {
    for (const f of Object.values(qemuFiles(dir))) rmSync(f, { force: true });
  }
}

/** Copies only a file's data blocks (a clone where the filesystem can). */
export async function sparseCopy(from: string, to: string): Promise<void> {
  const proc = spawn("cp", ["--sparse=always", "--reflink=auto", from, to], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  proc.stderr!.on("data", (d) => (err += d));
  const code = await new Promise<number>((r) => proc.on("close", (c) => r(c ?? 1)));
  if (code !== 0)
    throw new BangerError("internal", `could not copy ${from} to ${to}: ${err.trim()}`, { hint: "Check free space where the VM directory lives (df -h)." });
}

/** Maps QMP's RunState to the driver contract's states. */
export function qemuStatusToState(status: string): VmmState {
  if (status === "running") return "running";
  if (status === "prelaunch" || status === "inmigrate") return "not-started";
  if (status === "shutdown" || status === "guest-panicked" || status === "internal-error") return "exited";
  return "paused";
}

/** Connects a unix socket with a bound on the wait. */
function connectUnix(path: string, timeoutMs: number): Promise<AgentStream> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new BangerError("timeout", `the guest agent socket ${path} did not accept within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.once("connect", () => {
      clearTimeout(timer);
      resolve(sock);
    });
    sock.once("error", (err) => {
      clearTimeout(timer);
      reject(
        new BangerError("unavailable", `cannot connect to the guest agent socket ${path}: ${err.message}`, {
          cause: err,
          hint: "Is the VM running? Check `banger vm show`.",
        }),
      );
    });
  });
}
