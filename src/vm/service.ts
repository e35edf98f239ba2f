import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { knownHostsText } from "../host/ssh-config.ts";
import { BangerError } from "../errors.ts";
import { tailLines, tailRotated } from "../host/tail.ts";
import { AgentClient } from "../agent/client.ts";
import type { AgentHealth } from "../agent/protocol.ts";
import { buildPortsView, type PortsView } from "./ports-view.ts";
import { webProbe } from "./port-probe.ts";
import { printable } from "../printable.ts";
import { growWorkDisk } from "../images/disks.ts";
import type { CallContext, SshInfo, VmCreateInput, VmLogs, VmSetInput } from "./model.ts";
import type { VmRow } from "../store/vms.ts";
import { createSteps, resolveArtifacts, type CreateCtx } from "./create.ts";
import { KeyedLocks, Mutex } from "./locks.ts";
import { toView, type VmView } from "./model.ts";
import type { Runtime, VmServiceDeps } from "./deps.ts";
import { fanout, resolveRef, type FanoutResult } from "./refs.ts";
import { AGENT_PORT, dirOf, knownHandle, startSteps, stopVmm, type StartCtx } from "./start-stop.ts";
import { setNet } from "./net-apply.ts";
import { runSteps } from "./steps.ts";
import { isSameProcess } from "./drivers/process.ts";
import { discardSavedState, pauseVm, resumeVm, suspendVm } from "./instant.ts";
import { forkVm } from "./fork.ts";
import { keepGolden, listGoldens, pruneGoldens, warmCreate, type GoldenInfo } from "./warm.ts";
import { createSnapshot, defaultSnapshotName, deleteSnapshot, listSnapshots, restoreSnapshotFiles, type SnapshotInfo } from "./snapshots.ts";

/** The VM use cases behind the `vm` RPC methods. */
export class VmService {
  readonly rt: Runtime = { handles: new Map(), agents: new Map() };
  private readonly locks = new KeyedLocks();
  private readonly allocLock = new Mutex();
  private golden: Promise<void> = Promise.resolve();

  constructor(readonly deps: VmServiceDeps) {}

  view(vm: VmRow): VmView {
    const h = this.rt.handles.get(vm.id);
    return toView(vm, h?.pid ?? null, dirOf(this.deps, vm.id).dir);
  }

  list(): VmView[] {
    return this.deps.vms.list().map((v) => this.view(v));
  }

  find(ref: string): VmRow {
    return resolveRef(ref, this.deps.vms.list());
  }

  /** Every VM's row. */
  rows(): VmRow[] {
    return this.deps.vms.list();
  }

  count(): number {
    return this.deps.vms.count();
  }

  /** The names of the VMs built on an image or booting a kernel: what stops the artifact's delete. */
  usersOf(what: { image?: string; kernel?: string }): string[] {
    const uses = (v: VmRow) => (what.image !== undefined && v.image === what.image) || (what.kernel !== undefined && v.kernel === what.kernel);
    return this.deps.vms
      .list()
      .filter(uses)
      .map((v) => v.name);
  }

  /** The agent client of a running VM (kept open: virtio-serial allows one host connection). */
  agent(vm: VmRow): AgentClient {
    if (vm.state !== "running") throw new BangerError("failed_precondition", `VM ${vm.name} is ${vm.state}`, { hint: `Start it: banger vm start ${vm.name}` });
    let client = this.rt.agents.get(vm.id);
    if (!client) {
      const handle = knownHandle(this.rt, vm, dirOf(this.deps, vm.id));
      if (!handle) throw new BangerError("failed_precondition", `VM ${vm.name} has no running VMM`);
      const driver = this.deps.drivers(vm.vmm);
      client = new AgentClient(() => driver.connectAgent(handle, AGENT_PORT));
      this.rt.agents.set(vm.id, client);
    }
    return client;
  }

  /** The agent's health report; banger's name for the VM comes last, so nothing in the answer can rename it. */
  async health(vm: VmRow): Promise<AgentHealth & { name: string }> {
    return { ...(await this.agent(vm).health({ timeoutMs: 5000 })), name: vm.name };
  }

  /** The guest's listening sockets, with the web ones probed from the host. */
  async ports(vm: VmRow): Promise<PortsView> {
    const { sockets, dropped } = await this.agent(vm).ports({ timeoutMs: 5000 });
    return buildPortsView(sockets, { vmName: vm.name, probeHost: vm.ip, probe: webProbe(), dropped });
  }

  /** Closes every agent connection (the daemon is going away; the VMs run on). */
  closeAgents() {
    for (const a of this.rt.agents.values()) a.close();
  }

  /** The end of the VM's console and VMM logs (and of their rotated `.1` when needed); at most 100,000 lines. */
  logs(vm: VmRow, lines: number): VmLogs {
    const dir = dirOf(this.deps, vm.id);
    const n = Math.min(lines, 100_000);
    return { name: vm.name, console_log: dir.consoleLog, vmm_log: dir.vmmLog, console: tailRotated(dir.consoleLog, n), vmm: tailRotated(dir.vmmLog, n) };
  }

  /** How to reach the VM over ssh: its address, banger's key and the VM's host key. */
  async sshInfo(vm: VmRow): Promise<SshInfo> {
    const hostKey = readFileSync(`${dirOf(this.deps, vm.id).hostKey}.pub`, "utf8").trim();
    return { name: vm.name, state: vm.state, ip: vm.ip, user: "root", key: (await this.deps.sshKey()).path, host_key: hostKey };
  }

  /** The warm-start copies kept in the cache. */
  cacheList(): GoldenInfo[] {
    return listGoldens(this.deps);
  }

  /** Removes outdated warm-start copies (all of them with `all`). */
  cachePrune(all?: boolean): { key: string; reason: string }[] {
    return pruneGoldens(this.deps, { all });
  }

  /** Runs fn holding the VM's lock, on a fresh copy of its row. */
  withVm<T>(id: string, fn: (vm: VmRow) => Promise<T>): Promise<T> {
    return this.locks.run(id, async () => {
      const vm = this.deps.vms.get(id);
      if (!vm) throw new BangerError("not_found", `VM ${id} was deleted meanwhile`);
      this.deps.log(`lock ${vm.name} acquired`);
      try {
        return await fn(vm);
      } finally {
        this.deps.log(`lock ${vm.name} released`);
      }
    });
  }

  async create(params: VmCreateInput, call: CallContext): Promise<VmView & { warnings: string[] }> {
    if (!params.cold) {
      const warm = await warmCreate(this.deps, this.rt, this.allocLock, params, call).finally(() => this.syncKnownHosts());
      if (warm) return { ...this.view(warm), warnings: [] };
    }
    const ctx = { params, warnings: [] } as unknown as CreateCtx;
    const steps = createSteps(this.deps, this.rt, this.allocLock);
    // The VM's lock is taken once its id exists; until then nothing else can name it.
    try {
      await runSteps(steps, ctx, {
        progress: call.progress,
        signal: call.signal,
        log: this.deps.log,
        failAt: this.deps.failAt?.(),
        pauseAt: this.deps.pauseAt?.(),
        beforeUndo: () => this.keepConsoleTail(ctx),
      });
    } finally {
      this.syncKnownHosts();
    }
    for (const w of ctx.warnings) call.progress({ stage: "warning", status: "info", message: w });
    this.keepGoldenLater(ctx.vm.id);
    return { ...this.view(this.deps.vms.get(ctx.vm.id)!), warnings: ctx.warnings };
  }

  /**
   * A golden for the VM's key (see warm.ts), made in the background: the create answers at once.
   * It is started before the answer goes out, so the VM is paused before any client command can
   * reach it and the golden holds the freshly booted guest, never the user's files.
   */
  private keepGoldenLater(id: string) {
    if (this.deps.config.warm_cache <= 0) return;
    const kept = this.withVm(id, (vm) => keepGolden(this.deps, this.rt, vm)).then(
      (msg) => this.deps.log(`warm start: ${msg}`),
      (err) => this.deps.log(`warm start: ${(err as Error).message}`),
    );
    this.golden = Promise.all([this.golden, kept]).then(() => {});
  }

  /** Settles once the goldens asked for so far are kept (or given up). */
  goldensSettled(): Promise<void> {
    return this.golden;
  }

  /** Boots a stopped VM (a suspended one is restored unless `cold`); on failure it is left stopped with the error recorded. */
  async start(vm: VmRow, call: CallContext, opts: { cold?: boolean } = {}): Promise<string> {
    if (vm.state === "running") return "already running";
    if (vm.state === "paused" || (vm.state === "suspended" && !opts.cold)) {
      const restored = await resumeVm(this.deps, this.rt, vm, call, opts);
      if (restored !== null) return restored;
    }
    if (vm.state === "suspended") {
      discardSavedState(dirOf(this.deps, vm.id));
      this.deps.vms.update(vm.id, { state: "stopped" });
      call.progress({ stage: "warning", status: "info", message: `${vm.name}: saved state discarded; booting cold` });
    }
    const { image, kernel } = resolveArtifacts(this.deps, vm.image, vm.kernel);
    const dir = dirOf(this.deps, vm.id);
    if (existsSync(dir.workDisk)) await growWorkDisk(dir.workDisk, vm.disk_bytes, { runner: this.deps.runner });
    const ctx: StartCtx = { vm, image, kernel, dir, warnings: [] };
    try {
      await runSteps(startSteps(this.deps, this.rt), ctx, { progress: call.progress, signal: call.signal, log: this.deps.log });
    } catch (err) {
      this.deps.vms.update(vm.id, { state: "stopped", last_error: (err as Error).message });
      throw err;
    }
    return ctx.warnings.length ? `started (${ctx.warnings.join("; ")})` : "started";
  }

  async stop(vm: VmRow): Promise<string> {
    if (vm.state === "suspended") return this.discard(vm);
    if (vm.state === "stopped" && !knownHandle(this.rt, vm, dirOf(this.deps, vm.id))) return "already stopped";
    // A paused guest cannot hear the power button; let it run so it can shut down cleanly.
    if (vm.state === "paused")
      await resumeVm(this.deps, this.rt, vm, { progress: () => {}, signal: new AbortController().signal } as unknown as CallContext).catch(() => {});
    this.deps.vms.update(vm.id, { state: "stopping", desired_state: "stopped" });
    const how = await stopVmm(this.deps, this.rt, vm, dirOf(this.deps, vm.id), this.graceMs());
    return `stopped (${how})`;
  }

  /** Stops the VM, then starts it from its fresh row. */
  async restart(vm: VmRow, call: CallContext): Promise<string> {
    const stopped = await this.stop(vm);
    return `${stopped}; ${await this.start(this.deps.vms.get(vm.id)!, call)}`;
  }

  async kill(vm: VmRow): Promise<string> {
    if (vm.state === "suspended") return this.discard(vm);
    this.deps.vms.update(vm.id, { desired_state: "stopped" });
    return `killed (${await stopVmm(this.deps, this.rt, vm, dirOf(this.deps, vm.id), 0)})`;
  }

  /** A suspended VM stops by dropping its saved state (its disks stay). */
  private discard(vm: VmRow): string {
    discardSavedState(dirOf(this.deps, vm.id));
    this.deps.vms.update(vm.id, { state: "stopped", desired_state: "stopped", teardown: {} });
    return "stopped (saved state discarded)";
  }

  async pause(vm: VmRow): Promise<string> {
    return pauseVm(this.deps, this.rt, vm);
  }

  async suspend(vm: VmRow): Promise<string> {
    return suspendVm(this.deps, this.rt, vm);
  }

  async resume(vm: VmRow, call: CallContext, opts: { cold?: boolean } = {}): Promise<string> {
    return (await resumeVm(this.deps, this.rt, vm, call, opts)) ?? this.start(this.deps.vms.get(vm.id)!, call, { cold: true });
  }

  /** Running copies of a running VM; errors of single copies are reported, the others kept. */
  async fork(vm: VmRow, opts: { name?: string; count?: number }, call: CallContext) {
    try {
      return await forkVm(this.deps, this.rt, this.allocLock, vm, opts, call);
    } finally {
      this.syncKnownHosts();
    }
  }

  snapshotCreate(vm: VmRow, name: string | undefined, memory: boolean): Promise<string> {
    return createSnapshot(this.deps, this.rt, vm, name ?? defaultSnapshotName(), memory);
  }

  snapshotList(vm: VmRow): Promise<SnapshotInfo[]> {
    return listSnapshots(this.deps, vm);
  }

  snapshotDelete(vm: VmRow, name: string): Promise<string> {
    return deleteSnapshot(this.deps, vm, name);
  }

  /** Back to the snapshot: with memory the VM runs on from that moment; disk-only, it boots again if it was running. */
  async snapshotRestore(vm: VmRow, name: string, call: CallContext): Promise<string> {
    const { memory, wasRunning } = await restoreSnapshotFiles(this.deps, this.rt, vm, name);
    const row = this.deps.vms.get(vm.id)!;
    if (memory) return `restored ${name}; ${await this.resume(row, call)}`;
    if (wasRunning) return `restored ${name} (disks); ${await this.start(row, call)}`;
    return `restored ${name} (disks)`;
  }

  async delete(vm: VmRow, force: boolean): Promise<string> {
    const running = vm.state !== "stopped";
    if (running && !force) {
      throw new BangerError("failed_precondition", `VM ${vm.name} is ${vm.state}; stop it first or use \`banger vm delete --force ${vm.name}\``);
    }
    await stopVmm(this.deps, this.rt, vm, dirOf(this.deps, vm.id), 0);
    rmSync(dirOf(this.deps, vm.id).dir, { recursive: true, force: true });
    this.deps.vms.delete(vm.id);
    this.syncKnownHosts();
    return "deleted";
  }

  async set(vm: VmRow, p: VmSetInput): Promise<string> {
    const notes: string[] = [];
    const running = vm.state === "running";
    if (p.cpus !== undefined || p.memory !== undefined) {
      this.deps.vms.update(vm.id, { cpus: p.cpus ?? vm.cpus, memory_mib: p.memory ?? vm.memory_mib });
      const changed = [p.cpus !== undefined && `cpus ${p.cpus}`, p.memory !== undefined && `memory ${p.memory} MiB`].filter(Boolean).join(", ");
      notes.push(`${changed}${running ? " (applied on next start)" : ""}`);
    }
    if (p.disk !== undefined) {
      if (p.disk < vm.disk_bytes)
        throw new BangerError("invalid_argument", `the work disk of ${vm.name} is ${vm.disk_bytes} bytes; it can grow but never shrink`, {
          hint: "Ask for a size at least as large as the current one.",
        });
      this.deps.vms.update(vm.id, { disk_bytes: p.disk });
      if (!running) await growWorkDisk(dirOf(this.deps, vm.id).workDisk, p.disk, { runner: this.deps.runner });
      notes.push(`disk ${p.disk} bytes${running ? " (grown on next start)" : ""}`);
    }
    notes.push(...(await setNet(this.deps, vm, p)));
    return notes.length ? notes.join("; ") : "nothing to change";
  }

  /** Resolves refs from one snapshot and runs op on each under its lock, concurrently. */
  fan(refs: string[], op: (vm: VmRow) => Promise<string>): Promise<FanoutResult[]> {
    return fanout(refs, this.deps.vms.list(), (vm) => this.withVm(vm.id, op));
  }

  /** Rewrites banger's known_hosts from the VMs' host keys (generated by banger, so never guessed). */
  syncKnownHosts() {
    const entries = this.deps.vms.list().flatMap((vm) => {
      try {
        return [{ name: vm.name, ip: vm.ip, hostKey: readFileSync(`${dirOf(this.deps, vm.id).hostKey}.pub`, "utf8") }];
      } catch {
        return [];
      }
    });
    mkdirSync(dirname(this.deps.paths.knownHosts), { recursive: true, mode: 0o700 });
    writeFileSync(this.deps.paths.knownHosts, knownHostsText(entries), { mode: 0o600 });
  }

  /** A failed create removes the VM dir; its console tail goes to the daemon log first, for diagnosis. */
  private keepConsoleTail(ctx: { vm?: VmRow; dir?: { consoleLog: string } }) {
    if (!ctx.vm || !ctx.dir || !existsSync(ctx.dir.consoleLog)) return;
    const tail = printable(tailLines(ctx.dir.consoleLog, 40, 256 * 1024), { lines: true })
      .split("\n")
      .join("\n  | ");
    this.deps.log(`console of ${ctx.vm.name} before undo:\n  | ${tail}`);
  }

  graceMs(): number {
    return this.deps.readiness.stopGraceMs;
  }

  /** True while the VMM process recorded for this VM is alive. */
  vmmAlive(vm: VmRow): boolean {
    const h = knownHandle(this.rt, vm, dirOf(this.deps, vm.id));
    return Boolean(h && isSameProcess(h.pid, h.pidStartTime));
  }
}
