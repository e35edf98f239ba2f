/**
 * In-process VmService for tests: a recording fake driver whose "VMM" is a real `sleep`
 * process (so pid checks behave as with a real one) serving the real agent handler on a Unix
 * socket, a recording network port, an in-memory SQLite store, and real disk tools on a temp
 * directory. No daemon, no socket, no root.
 */
import type { GroupMember, VmNet } from "../vm/net-apply.ts";
import { formatNetPolicy } from "../vm/net-policy.ts";
import type { Database } from "bun:sqlite";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHandler, lineServer } from "../agent/server.ts";
import { unixConnector } from "../agent/client.ts";
import { DEFAULTS, type Config } from "../config.ts";
import { resolvePaths, type Paths } from "../host/paths.ts";
import { hostRunner, type Runner } from "../host/runner.ts";
import { ensureSshKey } from "../host/sshkey.ts";
import { ArtifactStore } from "../store/artifacts.ts";
import { openStore } from "../store/db.ts";
import { VmStore } from "../store/vms.ts";
import type { NetworkPort, VmServiceDeps } from "../vm/deps.ts";
import { isAlive } from "../vm/drivers/process.ts";
import type { AgentStream, BootPlan, Driver, DriveSpec, VmmHandle, VmmState, SavedStateFiles, SavedStateMeta } from "../vm/drivers/types.ts";
import { VmService } from "../vm/service.ts";
import { sweepDeadFakeAgents } from "./fake-firecracker/guest.ts";

/** Records every call; `failStart` makes the next start throw after spawning (as a VMM crash would). */
export class RecordingDriver implements Driver {
  readonly kind = "firecracker" as const;
  readonly calls: string[] = [];
  failStart: Error | null = null;
  /** VMMs whose vCPUs are stopped (by pause or a snapshot), until resumed. */
  readonly paused = new Set<number>();
  private readonly agents = new Map<number, Server>();
  /** Each VMM's pretend guest files (what its agent reads and re-identify writes). */
  readonly guests = new Map<number, Record<string, string>>();
  private readonly plans = new Map<number, BootPlan>();

  async start(plan: BootPlan): Promise<VmmHandle> {
    this.calls.push(`start ${plan.vmId}`);
    const child = spawn("sleep", ["3600"], { detached: true, stdio: "ignore" });
    child.unref();
    const pid = child.pid!;
    const agentPath = join(plan.dir, "agent.sock");
    if (this.failStart) {
      process.kill(pid, "SIGKILL");
      throw this.failStart;
    }
    const guest = fakeGuest(plan);
    const server = createServer((sock) => {
      sock.on("error", () => {});
      sock.on(
        "data",
        lineServer(createHandler(guest.deps), (line) => sock.write(line)),
      );
    });
    await new Promise<void>((r) => server.listen(agentPath, r));
    this.agents.set(pid, server);
    this.guests.set(pid, guest.files);
    this.plans.set(pid, plan);
    return {
      vmm: "firecracker",
      pid,
      controlSocket: join(plan.dir, "api.sock"),
      agent: { kind: "hybrid-vsock", path: agentPath },
      startedAt: new Date(0).toISOString(),
    };
  }

  async stop(handle: VmmHandle): Promise<"graceful" | "killed" | "already-exited"> {
    this.calls.push(`stop ${handle.pid}`);
    if (!isAlive(handle.pid)) return "already-exited";
    await this.kill(handle);
    return "graceful";
  }

  async kill(handle: VmmHandle): Promise<void> {
    this.calls.push(`kill ${handle.pid}`);
    try {
      process.kill(handle.pid, "SIGKILL");
    } catch {}
    this.agents.get(handle.pid)?.close();
    this.agents.delete(handle.pid);
    this.guests.delete(handle.pid);
    this.plans.delete(handle.pid);
    for (let i = 0; i < 200 && isAlive(handle.pid); i++) await Bun.sleep(5);
  }

  async state(handle: VmmHandle): Promise<VmmState> {
    if (!isAlive(handle.pid)) return "exited";
    return this.paused.has(handle.pid) ? "paused" : "running";
  }

  async rediscover(): Promise<VmmHandle | null> {
    return null;
  }

  async pause(handle: VmmHandle): Promise<void> {
    this.calls.push(`pause ${handle.pid}`);
    this.paused.add(handle.pid);
  }

  async resume(handle: VmmHandle): Promise<void> {
    this.calls.push(`resume ${handle.pid}`);
    this.paused.delete(handle.pid);
  }

  /** Writes stand-in state and memory files, then ends the process. */
  async suspend(handle: VmmHandle, files: SavedStateFiles): Promise<SavedStateMeta> {
    this.calls.push(`suspend ${handle.pid}`);
    writeFileSync(files.state, "state");
    writeFileSync(files.memory, "memory");
    await this.kill(handle);
    return { vmm: "firecracker", version: "harness", accel: "kvm", savedAt: new Date(0).toISOString() };
  }

  /** Leaves the VMM paused, as a real save does, for the caller to resume. */
  async snapshot(handle: VmmHandle, files: SavedStateFiles): Promise<SavedStateMeta> {
    this.calls.push(`snapshot ${handle.pid}`);
    this.paused.add(handle.pid);
    writeFileSync(files.state, "state");
    writeFileSync(files.memory, "memory");
    return { vmm: "firecracker", version: "harness", accel: "kvm", savedAt: new Date(0).toISOString() };
  }

  forkProblem(): string | null {
    return null;
  }

  async setLink(handle: VmmHandle, up: boolean): Promise<void> {
    this.calls.push(`link ${handle.pid} ${up ? "up" : "down"}`);
  }

  /** The guest sees the drive's file at its new size at once (the config interrupt). */
  async growDrive(handle: VmmHandle, _dir: string, drive: DriveSpec, bytes: number): Promise<void> {
    this.calls.push(`grow ${handle.pid} ${drive.id} ${bytes}`);
    const files = this.guests.get(handle.pid);
    if (files) files[`/sys/class/block/${guestDevice(this.plans.get(handle.pid)!, drive.id)}/size`] = `${Math.floor(statSync(drive.path).size / 512)}\n`;
  }

  async restoreProblem(meta: SavedStateMeta): Promise<string | null> {
    return meta.version === "harness" ? null : `the saved state was written by Firecracker ${meta.version}`;
  }

  async restore(plan: BootPlan): Promise<VmmHandle> {
    this.calls.push(`restore ${plan.vmId}`);
    return this.start(plan);
  }

  connectAgent(handle: VmmHandle): Promise<AgentStream> {
    return unixConnector(handle.agent.path)();
  }

  async cleanup(handle: VmmHandle | null): Promise<void> {
    this.calls.push(`cleanup ${handle?.pid ?? "-"}`);
  }

  /** Ends every VMM this driver started (test teardown). */
  async killAll(): Promise<void> {
    for (const pid of [...this.agents.keys()]) await this.kill({ pid } as VmmHandle);
  }
}

/** /dev/vdX of a plan's drive, in attach order. */
function guestDevice(plan: BootPlan, driveId: string): string {
  return `vd${String.fromCharCode(97 + plan.drives.findIndex((d) => d.id === driveId))}`;
}

/** The agent's /proc and /sys view of a guest that has just booted (the work disk mounted at /root). */
function fakeGuest(plan: BootPlan) {
  const files: Record<string, string> = {
    "/proc/uptime": "1.00 0.50\n",
    "/proc/sys/kernel/random/boot_id": `${crypto.randomUUID()}\n`,
    "/proc/mounts": `/dev/vda / ext4 ro 0 0\n/dev/${guestDevice(plan, "work")} /root ext4 rw 0 0\n`,
  };
  for (const d of plan.drives)
    files[`/sys/class/block/${guestDevice(plan, d.id)}/size`] = `${existsSync(d.path) ? Math.floor(statSync(d.path).size / 512) : 0}\n`;
  const readText = async (p: string) => files[p] ?? "";
  const deps = {
    version: "harness",
    readText,
    list: async () => [],
    link: async () => "",
    hostname: () => plan.vmId,
    // The pretend guest takes a new identity by recording it (nothing on the host changes); commands are kept in /commands.
    reidentify: {
      run: async (argv: string[]) => void (files["/commands"] = `${files["/commands"] ?? ""}${argv.join(" ")}\n`),
      writeFile: async (p: string, d: string) => void (files[p] = d),
      reseed: () => {},
      readText,
      sleep: (ms: number) => Bun.sleep(ms),
      setClock: () => {},
      reloadSshd: async () => {},
    },
  };
  return { files, deps };
}

/** A network port that records what the service asked of the host network. */
export class RecordingNetwork implements NetworkPort {
  readonly calls: string[] = [];
  readonly missingTaps = new Set<string>();
  /** Addresses with NAT on right now. */
  readonly nat = new Set<string>();
  constructor(private readonly taps: string[]) {}
  poolTaps() {
    return this.taps;
  }
  async checkTap(tap: string) {
    this.calls.push(`check ${tap}`);
    if (this.missingTaps.has(tap)) throw new Error(`TAP ${tap} is missing`);
  }
  async applyVm(vm: VmNet) {
    this.calls.push(`net ${vm.ip} ${formatNetPolicy(vm.policy)}`);
    if (vm.policy.mode === "nat") this.nat.add(vm.ip);
    else this.nat.delete(vm.ip);
  }
  async removeVm(vm: { ip: string }) {
    this.calls.push(`net- ${vm.ip}`);
    this.nat.delete(vm.ip);
  }
  async setGroups(members: GroupMember[]) {
    this.calls.push(`groups ${members.map((m) => `${m.ip}:${m.group}`).join(",")}`);
  }
  gateway() {
    return { ip: "172.31.250.1", mask: "255.255.255.0", prefix: 24 };
  }
  nameservers() {
    return ["172.31.250.1"];
  }
  async allowResolved(vmId: string, addrs: string[]) {
    this.calls.push(`allow ${vmId} ${addrs.join(",")}`);
  }
}

export interface Harness {
  svc: VmService;
  deps: VmServiceDeps;
  driver: RecordingDriver;
  network: RecordingNetwork;
  db: Database;
  paths: Paths;
  records: Map<string, string>;
  /** Fault injection as a dependency: the step to fail at, or to wait before. */
  faults: { failAt?: string; pauseAt?: string };
  /** A second service over the same store and host, as after a daemon restart. */
  restart(): VmService;
  close(): Promise<void>;
}

const noCall = { progress: () => {}, signal: new AbortController().signal };
export const callCtx = () => ({ ...noCall, signal: new AbortController().signal });

/**
 * Builds the harness; `taps` sets the TAP pool size (or `tapNames` names real ones). `vmm` puts
 * a real driver (the Firecracker driver over the fake, say) in place of the recording one; its
 * VMs are deleted on close. Always `close()` it.
 */
export async function serviceHarness(opts: { taps?: number; tapNames?: string[]; vmm?: Driver } = {}): Promise<Harness> {
  const root = mkdtempSync(join(tmpdir(), "banger-svc-"));
  const runner = countingRunner();
  const paths = resolvePaths({ HOME: root, XDG_RUNTIME_DIR: join(root, "run") });
  mkdirSync(paths.vmsDir, { recursive: true });
  const db = openStore(":memory:");
  const artifacts = new ArtifactStore(db);
  await seedImage(paths, artifacts);
  const config: Config = { ...DEFAULTS, vmm: "firecracker", subnet: "172.31.250.1/24", default_image: "bookworm", warm_cache: 0 };
  const driver = new RecordingDriver();
  const network = new RecordingNetwork(opts.tapNames ?? Array.from({ length: opts.taps ?? 4 }, (_, i) => `tap-h${i}`));
  const records = new Map<string, string>();
  const faults: Harness["faults"] = {};
  // The daemon's own first-use key maker, so the harness key is made as a user's is.
  const sshKey = { path: paths.sshKey, publicKey: await ensureSshKey(paths.sshKey, hostRunner) };
  const logs: string[] = [];
  const deps: VmServiceDeps = {
    paths,
    config,
    vms: new VmStore(db),
    artifacts,
    runner,
    drivers: () => opts.vmm ?? driver,
    defaultVmm: () => "firecracker",
    network,
    dns: { set: (n, ip) => records.set(n, ip), delete: (n) => records.delete(n), clear: () => records.clear() },
    log: (m) => logs.push(m),
    agent: { version: "harness", binaryPath: null },
    sshKey: async () => sshKey,
    readiness: { agentTimeoutMs: 5_000, sshTimeoutMs: 1_000, skipSsh: true, stopGraceMs: 100 },
    failAt: () => faults.failAt,
    pauseAt: () => faults.pauseAt,
  };
  const svc = new VmService(deps);
  return {
    svc,
    deps,
    driver,
    network,
    db,
    paths,
    records,
    faults,
    restart: () => new VmService(deps),
    close: () => closeHarness({ svc, deps, driver, runner, db, root, realVmm: Boolean(opts.vmm) }),
  };
}

/** Ends a harness: a real VMM's VMs deleted, the recorded VMMs killed, the store closed, its directory removed. */
async function closeHarness(h: {
  svc: VmService;
  deps: VmServiceDeps;
  driver: RecordingDriver;
  runner: { idle(): Promise<void> };
  db: Database;
  root: string;
  realVmm: boolean;
}): Promise<void> {
  if (h.realVmm) {
    await h.svc.goldensSettled();
    for (const vm of h.deps.vms.list()) await h.svc.delete(vm, true).catch(() => "");
    // A fake VMM ended by SIGKILL leaves its agent socket and pretend guest behind.
    sweepDeadFakeAgents();
  }
  await h.driver.killAll();
  // An operation the crash tests abandoned may still be copying a disk beside its held step.
  await h.runner.idle();
  h.db.close();
  rmSync(h.root, { recursive: true, force: true });
}

/** The host runner, counting its commands in flight, so close() can wait for those an abandoned operation started. */
function countingRunner(): Runner & { idle(): Promise<void> } {
  let inFlight = 0;
  return {
    async run(argv, opts) {
      inFlight++;
      try {
        return await hostRunner.run(argv, opts);
      } finally {
        inFlight--;
      }
    },
    /** Resolves once no command has run for three checks 10 ms apart (a lane's next step starts in between), or after 5 s. */
    async idle() {
      const deadline = Date.now() + 5000;
      for (let quiet = 0; quiet < 3 && Date.now() < deadline; ) {
        await Bun.sleep(10);
        quiet = inFlight === 0 ? quiet + 1 : 0;
      }
    },
  };
}

/** A kernel file and an image of small real ext4 files, registered in the store. */
async function seedImage(paths: Paths, artifacts: ArtifactStore): Promise<void> {
  const dir = join(paths.imagesDir, "bookworm");
  mkdirSync(dir, { recursive: true });
  const rootfs = join(dir, "rootfs.ext4");
  const seed = join(dir, "work-seed.ext4");
  for (const f of [rootfs, seed]) {
    await hostRunner.run(["truncate", "-s", "16M", f]);
    await hostRunner.run(["mkfs.ext4", "-q", "-F", f]);
  }
  const kernel = join(dir, "vmlinux");
  writeFileSync(kernel, "\x7fELF harness kernel\n");
  const now = new Date(0).toISOString();
  artifacts.putKernel({ name: "default", version: "0.0.0-test", path: kernel, sha256: "0".repeat(64), size_bytes: 1, source: "test", created_at: now });
  artifacts.putImage({
    name: "bookworm",
    rootfs_path: rootfs,
    work_seed_path: seed,
    kernel: "default",
    agent_version: "harness",
    fingerprint: "test",
    size_bytes: 16 << 20,
    source: "test",
    created_at: now,
  });
}
