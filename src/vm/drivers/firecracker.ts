import { spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { open } from "node:fs/promises";
import { isAbsolute, join, relative, resolve } from "node:path";
import { BangerError } from "../../errors.ts";
import { logTail } from "../../host/tail.ts";
import { UnixSocketApi, type FirecrackerApi } from "./firecracker-api.ts";
import { dialHybridVsock } from "./hybrid-vsock.ts";
import { findByArgs, isAlive, isSameProcess, signalGroup, startTime, startedAt, systemClock, waitForExit, type Clock } from "./process.ts";
import { firecrackerBinaryVersion, firecrackerLoadState, firecrackerRestoreProblem, firecrackerSaveState } from "./firecracker-state.ts";
import type { AgentStream, BootPlan, Driver, DriveSpec, SavedStateFiles, SavedStateMeta, VmmHandle, VmmState } from "./types.ts";

/** Bound on snapshot create/load requests (memory is written or mapped). */
const SNAPSHOT_TIMEOUT_MS = 60_000;

/** What the Firecracker driver needs from the outside world. */
export interface FirecrackerDeps {
  /** The executable, or an argv prefix such as ["bun", "src/testing/fake-firecracker.ts"]. */
  bin: string | string[];
  clock?: Clock;
  /** Bound for the API socket to appear after spawn (firecracker-go-sdk uses 3 s). */
  socketTimeoutMs?: number;
  /** Bound for reaching the guest agent through hybrid vsock. */
  agentTimeoutMs?: number;
  /** Builds the API client for a socket; tests may pass a recording fake. */
  api?: (socketPath: string) => FirecrackerApi;
  /** Receives one line per boot step with its duration. */
  log?: (line: string) => void;
}

/** Per-run files in the VM directory that the driver owns. */
export function firecrackerFiles(dir: string) {
  return { apiSocket: join(dir, "fc.sock"), agentSocket: join(dir, "agent.sock"), metrics: join(dir, "metrics.json") };
}

/** Kernel args the driver always sets; Firecracker itself appends root=/dev/vda and the virtio-mmio devices. */
export const BASE_BOOT_ARGS = "console=ttyS0 reboot=k panic=1 pci=off";

/** The Firecracker VMM behind the Driver contract. */
export class FirecrackerDriver implements Driver {
  readonly kind = "firecracker" as const;
  private readonly clock: Clock;
  private version: string | null = null;

  private readonly argv: string[];

  constructor(private readonly deps: FirecrackerDeps) {
    this.clock = deps.clock ?? systemClock;
    // Firecracker runs in the VM directory, so a relative binary path is resolved here, once.
    const [cmd, ...rest] = typeof deps.bin === "string" ? [deps.bin] : deps.bin;
    this.argv = [cmd!.includes("/") ? resolve(cmd!) : cmd!, ...rest];
  }

  private api(socket: string, timeoutMs?: number): FirecrackerApi {
    return this.deps.api ? this.deps.api(socket) : new UnixSocketApi(socket, timeoutMs);
  }

  /** Spawns Firecracker, configures it step by step, starts the instance; on any failure leaves nothing behind. */
  async start(plan: BootPlan): Promise<VmmHandle> {
    return this.launch(plan, (api) => this.configure(plan, api));
  }

  /** Spawns a fresh Firecracker, runs `setup` against its API; on any failure leaves nothing behind. */
  private async launch(plan: BootPlan, setup: (api: FirecrackerApi) => Promise<void>, timeoutMs?: number): Promise<VmmHandle> {
    const files = firecrackerFiles(plan.dir);
    const live = findByArgs("--api-sock", files.apiSocket).filter(isAlive);
    if (live.length) {
      throw new BangerError("already_exists", `A Firecracker process (pid ${live[0]}) already serves ${files.apiSocket}.`, {
        hint: "Stop the VM first (banger vm stop), or kill that process if it is left over.",
      });
    }
    // Firecracker refuses an existing socket path and never unlinks one, so stale sockets must go first.
    await this.cleanup(null, plan.dir);
    const pid = await this.spawnVmm(plan, files.apiSocket);
    const handle: VmmHandle = {
      vmm: "firecracker",
      pid,
      pidStartTime: startTime(pid),
      controlSocket: files.apiSocket,
      agent: { kind: "hybrid-vsock", path: files.agentSocket, cid: plan.cid },
      startedAt: new Date(this.clock.now()).toISOString(),
    };
    try {
      await this.waitForSocket(pid, files.apiSocket, plan.consoleLog);
      await setup(this.api(files.apiSocket, timeoutMs));
      return handle;
    } catch (err) {
      await this.kill(handle);
      await this.cleanup(handle, plan.dir);
      throw err;
    }
  }

  async pause(handle: VmmHandle): Promise<void> {
    await this.api(handle.controlSocket).request("PATCH", "/vm", { state: "Paused" });
  }

  async resume(handle: VmmHandle): Promise<void> {
    await this.api(handle.controlSocket).request("PATCH", "/vm", { state: "Resumed" });
  }

  /** Pauses, writes a full snapshot (state + memory) and ends the process. */
  async suspend(handle: VmmHandle, files: SavedStateFiles): Promise<SavedStateMeta> {
    for (const f of [files.state, files.memory]) rmSync(f, { force: true });
    const meta = await firecrackerSaveState(this.api(handle.controlSocket, SNAPSHOT_TIMEOUT_MS), files, () => this.clock.now());
    await this.kill(handle);
    return meta;
  }

  /** A full snapshot of the paused VM (Firecracker writes the memory file itself); the VM stays paused. */
  async snapshot(handle: VmmHandle, files: SavedStateFiles): Promise<SavedStateMeta> {
    for (const f of [files.state, files.memory]) rmSync(f, { force: true });
    return firecrackerSaveState(this.api(handle.controlSocket, SNAPSHOT_TIMEOUT_MS), files, () => this.clock.now());
  }

  /**
   * Copies work: drives are given relative to the VM directory (Firecracker's working directory), so
   * a snapshot loaded in a copy's directory opens that copy's disks; TAP and vsock come from the overrides.
   */
  forkProblem(): string | null {
    return null;
  }

  /**
   * Firecracker has no link control. A restored copy's frames still carry its source's MAC and
   * address until it is re-identified, and its TAP's anti-spoofing rules drop exactly those.
   */
  async setLink(): Promise<void> {}

  /** `PATCH /drives/{id}` with the same file (post-boot only): Firecracker re-reads its size and interrupts the guest. */
  async growDrive(handle: VmmHandle, dir: string, drive: DriveSpec): Promise<void> {
    await this.api(handle.controlSocket).request("PATCH", `/drives/${drive.id}`, { drive_id: drive.id, path_on_host: inDir(dir, drive.path) });
  }

  async restoreProblem(meta: SavedStateMeta): Promise<string | null> {
    this.version ??= firecrackerBinaryVersion(this.argv);
    return firecrackerRestoreProblem(meta, this.version);
  }

  /** A fresh Firecracker that loads the snapshot with this plan's TAP and agent socket, resumed. */
  async restore(plan: BootPlan, files: SavedStateFiles): Promise<VmmHandle> {
    return this.launch(plan, (api) => firecrackerLoadState(api, plan, files, firecrackerFiles(plan.dir).agentSocket), SNAPSHOT_TIMEOUT_MS);
  }

  private async spawnVmm(plan: BootPlan, apiSocket: string): Promise<number> {
    const [cmd, ...prefix] = this.argv;
    // Opened on node's thread pool: creating an inode can cost milliseconds of the daemon's one JS thread.
    const out = await open(plan.consoleLog, "a");
    try {
      // Detached in its own session so the VM outlives the daemon; its console goes to the VM's log.
      // The VM directory is its working directory: drive paths in a snapshot are relative to it.
      const child = spawn(cmd!, [...prefix, "--api-sock", apiSocket, "--id", plan.vmId], {
        cwd: plan.dir,
        detached: true,
        stdio: ["ignore", out.fd, out.fd],
      });
      child.on("error", () => {});
      child.unref();
      if (!child.pid) {
        throw new BangerError("not_available", `Could not run ${cmd}.`, { hint: "Check the firecracker binary setting (banger doctor)." });
      }
      return child.pid;
    } finally {
      await out.close();
    }
  }

  private async waitForSocket(pid: number, apiSocket: string, consoleLog: string): Promise<void> {
    const bound = this.deps.socketTimeoutMs ?? 3000;
    const deadline = this.clock.now() + bound;
    const api = this.api(apiSocket);
    for (let attempt = 0; ; ) {
      if (!isAlive(pid)) {
        throw new BangerError("unavailable", `Firecracker exited before its API socket was ready: ${logTail(consoleLog)}`, {
          hint: `See ${consoleLog}.`,
        });
      }
      if (existsSync(apiSocket)) {
        try {
          await api.request("GET", "/machine-config");
          return;
        } catch {
          // not serving yet
        }
      }
      if (this.clock.now() >= deadline) {
        throw new BangerError("timeout", `Firecracker's API socket ${apiSocket} was not ready within ${bound} ms.`, {
          hint: `See ${consoleLog}.`,
        });
      }
      // Short pauses first: a VMM is usually serving within a few tens of milliseconds.
      await this.clock.sleep(Math.min(2 * 2 ** attempt++, 10));
    }
  }

  private async configure(plan: BootPlan, api: FirecrackerApi): Promise<void> {
    const files = firecrackerFiles(plan.dir);
    for (const [name, fn] of bootSteps(plan, files)) {
      const t0 = this.clock.now();
      try {
        await fn(api);
      } catch (err) {
        if (err instanceof BangerError) {
          throw new BangerError(err.code, `Firecracker boot step "${name}" failed: ${err.message}`, { hint: err.hint, cause: err });
        }
        throw err;
      }
      this.deps.log?.(`firecracker ${plan.vmId}: ${name} ${this.clock.now() - t0} ms`);
    }
  }

  /** SendCtrlAltDel, wait up to graceMs, then SIGKILL. */
  async stop(handle: VmmHandle, graceMs: number): Promise<"graceful" | "killed" | "already-exited"> {
    if (!isSameProcess(handle.pid, handle.pidStartTime)) return "already-exited";
    try {
      await this.api(handle.controlSocket).request("PUT", "/actions", { action_type: "SendCtrlAltDel" });
    } catch {
      // An unanswered or refused request only means the grace wait will end in a kill.
    }
    if (await waitForExit(handle.pid, graceMs, this.clock, handle.pidStartTime)) return "graceful";
    await this.kill(handle);
    return "killed";
  }

  /** SIGKILL, then wait (bounded) for the process to be gone. */
  async kill(handle: VmmHandle): Promise<void> {
    if (!isSameProcess(handle.pid, handle.pidStartTime)) return;
    // The whole group: a VMM that runs helpers (the fake's agent) leaves none behind.
    signalGroup(handle.pid, "SIGKILL");
    if (!(await waitForExit(handle.pid, 2000, this.clock, handle.pidStartTime))) {
      throw new BangerError("internal", `Firecracker pid ${handle.pid} survived SIGKILL for 2 s.`, { hint: "Check the process state with ps." });
    }
  }

  /** "exited" when the recorded process is gone, else what Firecracker reports through GET /. */
  async state(handle: VmmHandle): Promise<VmmState> {
    if (!isSameProcess(handle.pid, handle.pidStartTime)) return "exited";
    try {
      const { body } = await this.api(handle.controlSocket).request("GET", "/");
      return body?.state === "Paused" ? "paused" : body?.state === "Not started" ? "not-started" : "running";
    } catch {
      return "running";
    }
  }

  /** Finds the live Firecracker serving <dir>/fc.sock and answering GET / for this VM. */
  async rediscover(vmId: string, dir: string): Promise<VmmHandle | null> {
    const files = firecrackerFiles(dir);
    for (const pid of findByArgs("--api-sock", files.apiSocket)) {
      if (!isAlive(pid)) continue;
      try {
        const { body } = await this.api(files.apiSocket).request("GET", "/");
        if (body?.id !== vmId) continue;
      } catch {
        continue;
      }
      return {
        vmm: "firecracker",
        pid,
        pidStartTime: startTime(pid),
        controlSocket: files.apiSocket,
        agent: { kind: "hybrid-vsock", path: files.agentSocket, cid: await this.cid(files.apiSocket) },
        startedAt: startedAt(pid),
      };
    }
    return null;
  }

  private async cid(apiSocket: string): Promise<number | undefined> {
    try {
      return (await this.api(apiSocket).request("GET", "/vm/config")).body?.vsock?.guest_cid ?? undefined;
    } catch {
      return undefined;
    }
  }

  /** A connected stream to the guest's vsock port, after Firecracker's OK line. */
  connectAgent(handle: VmmHandle, port: number): Promise<AgentStream> {
    return dialHybridVsock(handle.agent.path, port, { timeoutMs: this.deps.agentTimeoutMs ?? 20_000, clock: this.clock });
  }

  /** Removes fc.sock, agent.sock and guest-initiated agent.sock_<port> listeners. */
  async cleanup(handle: VmmHandle | null, dir: string): Promise<void> {
    const files = firecrackerFiles(dir);
    const paths = new Set([files.apiSocket, files.agentSocket]);
    if (handle) {
      paths.add(handle.controlSocket);
      paths.add(handle.agent.path);
    }
    if (existsSync(dir)) {
      for (const name of readdirSync(dir)) if (name.startsWith("agent.sock_")) paths.add(join(dir, name));
    }
    for (const p of paths) rmSync(p, { force: true });
  }
}

type Step = [string, (api: FirecrackerApi) => Promise<unknown>];

/** The configuration requests, in Firecracker's order (firecracker-go-sdk's handler list). */
export function bootSteps(plan: BootPlan, files: ReturnType<typeof firecrackerFiles>): Step[] {
  const put = (path: string, body: unknown) => (api: FirecrackerApi) => api.request("PUT", path, body);
  // Firecracker opens the logger's and the metrics' file but will not create it.
  const putAfterTouch = (file: string, path: string, body: unknown) => async (api: FirecrackerApi) => (await touch(file), api.request("PUT", path, body));
  const steps: Step[] = [
    ["logger", putAfterTouch(plan.vmmLog, "/logger", { log_path: plan.vmmLog, level: "Info", show_level: true, show_log_origin: false })],
    ["metrics", putAfterTouch(files.metrics, "/metrics", { metrics_path: files.metrics })],
    ["machine-config", put("/machine-config", { vcpu_count: plan.cpus, mem_size_mib: plan.memoryMib, smt: false })],
    [
      "boot-source",
      put("/boot-source", {
        kernel_image_path: plan.kernelPath,
        ...(plan.initrdPath ? { initrd_path: plan.initrdPath } : {}),
        boot_args: `${BASE_BOOT_ARGS} ${plan.extraBootArgs}`.trim(),
      }),
    ],
  ];
  plan.drives.forEach((d, i) => {
    const path = inDir(plan.dir, d.path);
    steps.push([`drive ${d.id}`, put(`/drives/${d.id}`, { drive_id: d.id, path_on_host: path, is_root_device: i === 0, is_read_only: d.readOnly })]);
  });
  if (plan.nic) {
    steps.push(["network", put("/network-interfaces/eth0", { iface_id: "eth0", host_dev_name: plan.nic.tap, guest_mac: plan.nic.mac })]);
  }
  steps.push(["vsock", put("/vsock", { guest_cid: plan.cid, uds_path: files.agentSocket })]);
  steps.push(["start", put("/actions", { action_type: "InstanceStart" })]);
  return steps;
}

/**
 * A path inside the VM directory relative to it (the VMM's working directory), so the snapshot
 * names "overlay", not the source's directory; paths elsewhere (the shared image) stay absolute.
 */
export function inDir(dir: string, path: string): string {
  const rel = relative(dir, path);
  return rel && !rel.startsWith("..") && !isAbsolute(rel) ? rel : path;
}

/** Creates a file if it is missing, on node's thread pool rather than the daemon's one JS thread. */
async function touch(path: string): Promise<void> {
  await (await open(path, "a")).close();
}
