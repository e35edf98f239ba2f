/** The contract between the VM service and a VMM (Firecracker or QEMU). The service never branches on which one runs. */

export type VmmKind = "firecracker" | "qemu";

/** How the host reaches the guest agent. */
export type AgentChannelKind = "hybrid-vsock" | "vhost-vsock" | "virtio-serial";

/** One block device, in attach order: the first is the root device (/dev/vda). */
export interface DriveSpec {
  id: string; // alphanumerics and _ only (Firecracker's rule)
  path: string;
  readOnly: boolean;
}

/** Everything a driver needs to start one VM. */
export interface BootPlan {
  vmId: string; // also the VMM instance id
  /** The VM directory: sockets, logs and metrics live here. */
  dir: string;
  kernelPath: string; // uncompressed ELF vmlinux
  /** The kernel's initrd, when it needs one (a distribution kernel loads its virtio modules from it). */
  initrdPath?: string;
  /** Kernel args beyond what the driver itself adds (console, reboot, panic, root). */
  extraBootArgs: string;
  drives: DriveSpec[];
  nic?: { tap: string; mac: string };
  cpus: number;
  memoryMib: number;
  /** vsock guest CID (>= 3); used where the channel is vsock. */
  cid: number;
  consoleLog: string;
  vmmLog: string;
  /**
   * The guest RAM file. QEMU always maps guest RAM from this file (shared), so a suspend only has
   * to save device state; Firecracker writes its snapshot memory here.
   */
  memoryFile: string;
}

/** Where a suspended VM's device state lives, next to its RAM file. */
export interface SavedStateFiles {
  /** Device (and CPU) state written by the VMM. */
  state: string;
  /** The guest RAM the state belongs to. */
  memory: string;
}

export interface RestoreOptions {
  privateMemory?: boolean;
  linkDown?: boolean;
}

/** What was recorded with a saved state, so a restore on another VMM build is refused, not attempted. */
export interface SavedStateMeta {
  vmm: VmmKind;
  /** The VMM's version when the state was saved. */
  version: string;
  /** kvm or tcg for QEMU; kvm for Firecracker. */
  accel: string;
  savedAt: string;
}

/** What is true about a running VMM right now; persisted to handles.json. */
export interface VmmHandle {
  vmm: VmmKind;
  pid: number;
  /** Process start time (from /proc/<pid>/stat) so a recycled pid is never mistaken for ours. */
  pidStartTime?: string;
  /** Firecracker API socket or QEMU QMP socket. */
  controlSocket: string;
  agent: { kind: AgentChannelKind; path: string; cid?: number };
  startedAt: string;
}

export type VmmState = "running" | "paused" | "not-started" | "exited";

/** A bidirectional byte stream to the guest agent (a node:net Socket). */
export type AgentStream = import("node:net").Socket;

export interface Driver {
  readonly kind: VmmKind;
  /** Spawns and boots the VMM; on failure nothing it started is left behind. */
  start(plan: BootPlan): Promise<VmmHandle>;
  /** Graceful stop bounded by graceMs, then kill. Never hangs. */
  stop(handle: VmmHandle, graceMs: number): Promise<"graceful" | "killed" | "already-exited">;
  /** Forced stop. */
  kill(handle: VmmHandle): Promise<void>;
  state(handle: VmmHandle): Promise<VmmState>;
  /** Finds a running VMM for this VM again after a daemon restart (by socket, pid, command line). */
  rediscover(vmId: string, dir: string): Promise<VmmHandle | null>;
  /** Opens the host side of the agent channel to the given vsock port. */
  connectAgent(handle: VmmHandle, port: number): Promise<AgentStream>;
  /** Freezes the vCPUs; RAM stays where it is. */
  pause(handle: VmmHandle): Promise<void>;
  /** Lets paused vCPUs run again. */
  resume(handle: VmmHandle): Promise<void>;
  /**
   * Pauses and writes device state and a copy of guest memory to `files` (`liveMemory` is the
   * plan's RAM file, which QEMU maps); the VMM stays, paused, for the caller to resume or end.
   */
  snapshot(handle: VmmHandle, files: SavedStateFiles, liveMemory: string): Promise<SavedStateMeta>;
  /** Pauses, writes device state (and memory where the VMM keeps it apart) to `files`, then ends the VMM. */
  suspend(handle: VmmHandle, files: SavedStateFiles): Promise<SavedStateMeta>;
  /** Why a state saved as `meta` cannot be restored by this driver on this host, or null when it can. */
  restoreProblem(meta: SavedStateMeta): Promise<string | null>;
  /**
   * Starts a VMM for `plan` from the saved state (TAP and sockets from the plan); the guest runs on return.
   * `privateMemory` maps files.memory copy-on-write (forks sharing one frozen file); `linkDown` starts
   * with the NIC's link down, so a copy never speaks with its source's addresses before it is re-identified.
   */
  restore(plan: BootPlan, files: SavedStateFiles, opts?: RestoreOptions): Promise<VmmHandle>;
  /** Why running copies of a VM cannot be made with this VMM, or null when they can. */
  forkProblem(): string | null;
  /** Sets the NIC's link up or down (a fork's link goes up once it has its own identity). */
  setLink(handle: VmmHandle, up: boolean): Promise<void>;
  /**
   * Tells a running VMM that the backing file of `drive` (one of its plan's drives, in VM directory
   * `dir`) was extended to `bytes`, so the guest sees the larger disk (a config-change interrupt).
   */
  growDrive(handle: VmmHandle, dir: string, drive: DriveSpec, bytes: number): Promise<void>;
  /** Removes sockets and other per-run files once the VMM is gone. */
  cleanup(handle: VmmHandle | null, dir: string): Promise<void>;
}
