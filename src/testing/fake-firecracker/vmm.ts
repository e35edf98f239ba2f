import { appendFileSync, existsSync } from "node:fs";
import type { ApiReply, ApiRequest } from "./http.ts";
import { matchOperation, validateBody, type ApiSpec } from "./schema.ts";
import {
  FaultError,
  defaultConfig,
  exportConfig,
  ioDisplay,
  openDrive,
  probeOpen,
  setBootSource,
  setDrive,
  setMachineConfig,
  setNic,
  type VmConfig,
} from "./devices.ts";
import { HybridVsockBridge } from "./vsock.ts";
import { bootResourcesConfigured, createSnapshot, readSnapshotForLoad, restoreConfig } from "./snapshot.ts";
import type { PretendGuest } from "./guest.ts";

/** What the VMM needs from the process around it. */
export interface VmmOptions {
  id: string;
  version: string;
  ignoreCtrlAltDel: boolean;
  guest: PretendGuest;
  /** Ends the process (after the pretend guest reboots). */
  exit: (code: number) => void;
  /** Delay between SendCtrlAltDel and the exit, like a guest shutting down. */
  rebootDelayMs: number;
}

type State = "Not started" | "Running" | "Paused";

// Operations valid only before / only after InstanceStart (rpc_interface.rs).
const PRE_BOOT = new Set([
  "PUT /machine-config",
  "PATCH /machine-config",
  "PUT /boot-source",
  "PUT /logger",
  "PUT /metrics",
  "PUT /vsock",
  "PUT /balloon",
  "PUT /entropy",
  "PUT /serial",
  "PUT /cpu-config",
  "PUT /mmds/config",
  "PUT /snapshot/load",
  "PUT /drives/{drive_id}",
  "PUT /network-interfaces/{iface_id}",
  "PUT /pmem/{id}",
  "PUT /hotplug/memory",
]);
const POST_BOOT = new Set([
  "PATCH /drives/{drive_id}",
  "PATCH /network-interfaces/{iface_id}",
  "PATCH /pmem/{id}",
  "PATCH /vm",
  "PUT /snapshot/create",
  "PATCH /balloon",
  "GET /balloon/statistics",
  "PATCH /balloon/statistics",
  "PATCH /hotplug/memory",
]);
const AFTER = "The requested operation is not supported after starting the microVM.";
const BEFORE = "The requested operation is not supported before starting the microVM.";
// The i8042 buffer holds 16 bytes; each Ctrl+Alt+Del adds 4 that an ignoring guest never reads.
const I8042_CALLS = 4;

const fault = (message: string): ApiReply => ({ status: 400, body: { fault_message: message } });

/** The fake VMM: Firecracker's request rules and state machine over a real API socket. */
export class FakeVmm {
  state: State = "Not started";
  readonly cfg: VmConfig = defaultConfig();
  private bridge: HybridVsockBridge | null = null;
  private ctrlAltDels = 0;
  private machineTouched = false;

  constructor(
    private readonly spec: ApiSpec,
    private readonly opts: VmmOptions,
  ) {}

  /** Answers one API request. */
  async handle(req: ApiRequest): Promise<ApiReply> {
    const m = matchOperation(this.spec, req.method, req.path);
    if (!m) return fault(`Invalid request method and/or path: ${req.method} ${req.path}.`);
    if (m.param !== undefined && !/^[A-Za-z0-9_]+$/.test(m.param)) {
      return fault("API Resource IDs can only contain alphanumeric characters and underscores.");
    }
    let body: Record<string, unknown> = {};
    if (m.body) {
      if (!req.body.trim()) return fault(`Empty ${req.method} request.`);
      const err = validateBody(this.spec, m.body, req.body);
      if (err) return fault(`An error occurred when deserializing the json body of a request: ${err}.`);
      body = JSON.parse(req.body);
    }
    const idField = m.op.includes("{drive_id}") ? "drive_id" : m.op.includes("{iface_id}") ? "iface_id" : m.op.includes("{id}") ? "id" : null;
    if (idField && body[idField] !== m.param) return fault("The id from the path does not match the id from the body!");
    if (this.state === "Not started" && POST_BOOT.has(m.op)) return fault(BEFORE);
    if (this.state !== "Not started" && PRE_BOOT.has(m.op)) return fault(AFTER);
    try {
      return await this.dispatch(m.op, body);
    } catch (err) {
      if (err instanceof FaultError) return fault(err.message);
      throw err;
    }
  }

  private async dispatch(op: string, body: Record<string, unknown>): Promise<ApiReply> {
    const ok: ApiReply = { status: 204 };
    switch (op) {
      case "GET /":
        return { status: 200, body: { id: this.opts.id, state: this.state, vmm_version: this.opts.version, app_name: "Firecracker" } };
      case "GET /version":
        return { status: 200, body: { firecracker_version: this.opts.version } };
      case "GET /machine-config":
        return { status: 200, body: this.cfg.machine };
      case "GET /vm/config":
        return { status: 200, body: exportConfig(this.cfg) };
      case "PUT /machine-config":
      case "PATCH /machine-config":
        this.machineTouched = true;
        return (setMachineConfig(this.cfg, body, op.startsWith("PATCH")), ok);
      case "PUT /boot-source":
        return (setBootSource(this.cfg, body), ok);
      case "PUT /drives/{drive_id}":
        return (setDrive(this.cfg, body), ok);
      case "PUT /network-interfaces/{iface_id}":
        return (setNic(this.cfg, body), ok);
      case "PUT /logger":
        return (this.setLogger(body), ok);
      case "PUT /metrics":
        return (this.setMetrics(body.metrics_path as string), ok);
      case "PUT /vsock":
        return (await this.setVsock(body), ok);
      case "PATCH /vm":
        this.state = body.state === "Paused" ? "Paused" : "Running";
        if (this.state === "Paused") this.opts.guest.freeze();
        else this.opts.guest.thaw();
        return ok;
      case "PUT /actions":
        return this.action(body.action_type as string);
      case "PATCH /drives/{drive_id}":
        return (this.patchDrive(body), ok);
      case "PATCH /network-interfaces/{iface_id}":
        return ok;
      case "PUT /snapshot/create":
        createSnapshot(this.cfg, this.state, this.opts.version, this.opts.guest.state(), body);
        this.log("Snapshot created");
        return ok;
      case "PUT /snapshot/load":
        return (await this.loadSnapshot(body), ok);
      default:
        if (op.startsWith("PUT ")) this.cfg.other.set(op.slice(5), body);
        return ok;
    }
  }

  /** Also used for --log-path: the file is created if missing. */
  setLogger(body: Record<string, unknown>): void {
    const path = body.log_path as string | undefined;
    if (path) {
      try {
        probeOpen(path, "a");
      } catch (err) {
        throw new FaultError(`Logger error: Failed to open target file: ${ioDisplay(err)}`);
      }
    }
    this.cfg.logger = {
      log_path: path ?? null,
      level: body.level ?? "Info",
      show_level: body.show_level ?? false,
      show_log_origin: body.show_log_origin ?? false,
    };
    this.log("Successfully set the logger");
  }

  /** Also used for --metrics-path; metrics can be initialised once per process. */
  setMetrics(path: string): void {
    if (this.cfg.metrics) throw new FaultError("Reinitialization of metrics not allowed.");
    try {
      probeOpen(path, "a");
    } catch (err) {
      throw new FaultError(`Failed to open target file: ${ioDisplay(err)}`);
    }
    this.cfg.metrics = { metrics_path: path };
  }

  private async setVsock(body: Record<string, unknown>): Promise<void> {
    const uds = body.uds_path as string;
    if ((body.guest_cid as number) < 3) throw new FaultError(`Cannot create backend for vsock device: invalid guest CID ${body.guest_cid}`);
    this.bridge?.close();
    this.bridge = null;
    if (existsSync(uds)) {
      throw new FaultError("Cannot create backend for vsock device: Error binding to the host-side Unix socket: Address in use (os error 98)");
    }
    this.bridge = await HybridVsockBridge.listen(uds, (port) => this.opts.guest.listener(port));
    this.cfg.vsock = { guest_cid: body.guest_cid as number, uds_path: uds };
  }

  /** A fresh process only (logger and metrics aside); the guest continues from the snapshot. */
  private async loadSnapshot(body: Record<string, unknown>): Promise<void> {
    if (bootResourcesConfigured(this.cfg, this.machineTouched)) {
      throw new FaultError("Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.");
    }
    const { snap, memGuest } = readSnapshotForLoad(body);
    if (snap.vsock) await this.setVsock({ ...snap.vsock });
    restoreConfig(this.cfg, snap);
    const resume = body.resume_vm === true;
    this.state = resume ? "Running" : "Paused";
    await this.opts.guest.restore(memGuest, !resume);
    this.log("Snapshot loaded");
  }

  /**
   * PATCH /drives/{id} (post-boot): a new or the same backing file is opened and its size re-read,
   * and the guest gets a config-change interrupt (the pretend guest's sysfs size changes).
   */
  private patchDrive(body: Record<string, unknown>): void {
    const drive = this.cfg.drives.get(body.drive_id as string);
    // Firecracker's DriveError::DeviceUpdate wording; the inner reasons are paraphrased.
    const prefix = "Unable to patch the block device: ";
    const suffix = " Please verify the request arguments.";
    if (!drive) throw new FaultError(`${prefix}Device manager error: No device with id ${body.drive_id} found.${suffix}`);
    if (body.path_on_host === undefined && body.rate_limiter === undefined) {
      throw new FaultError(`${prefix}Device manager error: Running method expected different backend.${suffix}`);
    }
    if (body.path_on_host !== undefined) {
      openDrive(body.path_on_host as string, drive.is_read_only === true, `${prefix}Virtio backend error: `);
      drive.path_on_host = body.path_on_host;
    }
    if (body.rate_limiter !== undefined) drive.rate_limiter = body.rate_limiter;
    this.opts.guest.disks(this.drivePaths());
  }

  /** The drives' backing files in the guest's order (/dev/vda is the root device). */
  drivePaths(): string[] {
    const all = [...this.cfg.drives.values()];
    return [...all.filter((d) => d.is_root_device), ...all.filter((d) => !d.is_root_device)].map((d) => d.path_on_host as string);
  }

  private action(type: string): ApiReply {
    if (type === "InstanceStart") {
      if (this.state !== "Not started") return fault(AFTER);
      if (!this.cfg.bootSource) return fault("Start microvm error: Cannot start microvm without kernel configuration.");
      this.state = "Running";
      this.opts.guest.boot(this.kernelCmdline(), this.cfg.machine.vcpu_count, this.cfg.machine.mem_size_mib);
      this.opts.guest.disks(this.drivePaths());
      this.log("Successfully started microvm that was configured from one single json");
      return { status: 204 };
    }
    if (type === "FlushMetrics") return this.flushMetrics();
    if (this.state === "Not started") return fault(BEFORE);
    return this.ctrlAltDel();
  }

  private ctrlAltDel(): ApiReply {
    if (this.opts.ignoreCtrlAltDel) {
      if (++this.ctrlAltDels > I8042_CALLS) return fault("Failed to send CTRL+ALT+DEL: i8042 internal buffer full.");
      return { status: 204 };
    }
    // The guest reboots (reboot=k), which ends the process with 0.
    setTimeout(() => {
      this.log("Vmm is stopping.");
      this.opts.exit(0);
    }, this.opts.rebootDelayMs);
    return { status: 204 };
  }

  private flushMetrics(): ApiReply {
    if (this.cfg.metrics) {
      appendFileSync(this.cfg.metrics.metrics_path, JSON.stringify({ utc_timestamp_ms: Date.now(), api_server: { process_startup_time_us: 0 } }) + "\n");
    }
    return { status: 204 };
  }

  /** The command line the guest sees: boot args plus what Firecracker appends. */
  kernelCmdline(): string {
    const args = this.cfg.bootSource?.boot_args ?? "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce";
    const root = [...this.cfg.drives.values()].find((d) => d.is_root_device);
    const extra = root ? ` root=/dev/vda ${root.is_read_only ? "ro" : "rw"}` : "";
    return `${args} pci=off${extra}`;
  }

  /** Writes a Firecracker-style line to the configured log file. */
  log(message: string): void {
    const path = this.cfg.logger?.log_path as string | null | undefined;
    if (!path) return;
    appendFileSync(path, `${new Date().toISOString()} [${this.opts.id}:fc_api] ${message}\n`);
  }

  /** Drops the vsock bridge; called on exit. */
  close(): void {
    this.bridge?.close();
  }
}
