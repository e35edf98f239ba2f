import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { findByArgs, signal } from "../../vm/drivers/process.ts";

/** How the pretend guest runs its agent. */
export interface GuestOptions {
  /** The agent argv; `--unix <socket>` is appended. */
  agentArgv: string[];
  /** Where the agent listens (stands in for the guest's vsock port 1024). */
  agentSocket: string;
  /** The pretend guest's own files (what `reidentify` writes: hostname, machine-id, host key). */
  root: string;
  agentDelayMs: number;
  write: (text: string) => void;
}

/** The vsock port the agent listens on inside a real guest. */
export const AGENT_PORT = 1024;

const SOCKET_PREFIX = "fake-fc-agent-";
const ROOT_PREFIX = "fake-fc-guest-";

/** This process's pretend guest files (beside its agent socket, swept the same way). */
export function guestRootPath(dir = tmpdir()): string {
  return join(dir, `${ROOT_PREFIX}${process.pid}`);
}

/** This process's agent socket; sockets of fakes that died by SIGKILL are swept on the way. */
export function agentSocketPath(dir = tmpdir()): string {
  sweepDeadFakeAgents(dir);
  return join(dir, `${SOCKET_PREFIX}${process.pid}.sock`);
}

/**
 * Removes the agent sockets (and kills the agents) of fakes that are gone: a SIGKILLed fake
 * cannot clean up after itself, so the next fake, or a test's cleanup, does it.
 */
export function sweepDeadFakeAgents(dir = tmpdir()): void {
  for (const name of readdirSync(dir)) {
    const gone = Number(name.slice(ROOT_PREFIX.length));
    if (name.startsWith(ROOT_PREFIX) && gone > 0 && !existsSync(`/proc/${gone}`)) rmSync(join(dir, name), { recursive: true, force: true });
    const pid = Number(name.slice(SOCKET_PREFIX.length, -".sock".length));
    if (!name.startsWith(SOCKET_PREFIX) || !(pid > 0) || existsSync(`/proc/${pid}`)) continue;
    // Its fake died without taking the agent along (e.g. SIGKILL before pdeathsig was armed).
    for (const orphan of findByArgs("--unix", join(dir, name))) signal(orphan, "SIGKILL");
    rmSync(join(dir, name), { force: true });
  }
}

/** The agent to run when none is given: the project's guest agent, else the small test agent. */
export function defaultAgentArgv(env: Record<string, string | undefined> = process.env): string[] {
  if (env.FAKE_FC_AGENT_CMD) return env.FAKE_FC_AGENT_CMD.split(/\s+/).filter(Boolean);
  const real = resolve(import.meta.dir, "../../guest-agent.ts");
  return [process.execPath, existsSync(real) ? real : join(import.meta.dir, "echo-agent.ts")];
}

/** What a snapshot keeps of the pretend guest (its "RAM"). */
export interface GuestState {
  cmdline: string;
  vcpus: number;
  memMib: number;
  bootId: string;
  bootedAt: number;
  /** Milliseconds the guest had run when frozen (its clock does not move while paused). */
  ranMs: number;
  /** The guest's own files by path (its identity after a `reidentify`). */
  files?: Record<string, string>;
}

/** Every file under `root`, by path relative to it. */
function readTree(root: string, at = root, out: Record<string, string> = {}): Record<string, string> {
  if (!existsSync(at)) return out;
  for (const e of readdirSync(at, { withFileTypes: true })) {
    const p = join(at, e.name);
    if (e.isDirectory()) readTree(root, p, out);
    else out[relative(root, p)] = readFileSync(p, "utf8");
  }
  return out;
}

/** The guest side of a booted fake VM: console output and the agent process. */
export class PretendGuest {
  private agent: ReturnType<typeof Bun.spawn> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private frozen = false;
  private current: GuestState | null = null;
  private runningSince = 0;
  /** Whether the guest's agent can be reached (after the boot delay, or at once after a restore). */
  private up = false;

  constructor(private readonly opts: GuestOptions) {}

  /** Prints a few kernel-like lines and starts the agent after the configured delay. */
  boot(cmdline: string, vcpus: number, memMib: number): void {
    const w = this.opts.write;
    w("[    0.000000] Linux version 6.1.0-fake (fake-firecracker) #1 SMP\n");
    w(`[    0.000000] Command line: ${cmdline}\n`);
    w(`[    0.010000] smpboot: Allowing ${vcpus} CPUs, Memory: ${memMib}MiB\n`);
    w("[    0.200000] virtio_blk virtio0: [vda] attached\n");
    w("[    0.300000] Run /sbin/init as init process\n");
    this.current = { cmdline, vcpus, memMib, bootId: crypto.randomUUID(), bootedAt: Date.now(), ranMs: 0 };
    this.runningSince = Date.now();
    this.timer = setTimeout(() => this.agentUp(), this.opts.agentDelayMs);
  }

  /**
   * Starts the stand-in agent process before any guest runs, unreachable until the guest is up:
   * a process takes tens of milliseconds to start, which a restored guest (its agent already
   * running in RAM) does not pay, and a booting one hides in its boot delay.
   */
  prestart(): void {
    if (!this.agent) this.startAgent();
  }

  /**
   * What the guest kernel shows of its disks: /sys/class/block/vdX/size (512-byte sectors) and, as
   * banger's guest init mounts them, / from /dev/vda and /root from the work disk /dev/vdc.
   */
  disks(paths: string[]): void {
    const root = this.opts.root;
    paths.forEach((p, i) => {
      const dev = `vd${String.fromCharCode(97 + i)}`;
      mkdirSync(join(root, "sys/class/block", dev), { recursive: true });
      writeFileSync(join(root, "sys/class/block", dev, "size"), `${existsSync(p) ? Math.floor(statSync(p).size / 512) : 0}\n`);
    });
    mkdirSync(join(root, "proc"), { recursive: true });
    writeFileSync(join(root, "proc/mounts"), `/dev/vda / ext4 ro 0 0\n${paths.length >= 3 ? "/dev/vdc /root ext4 rw,noatime 0 0\n" : ""}`);
  }

  /** Pause: the agent process is stopped (SIGSTOP) as vCPUs would be; nothing answers. */
  freeze(): void {
    if (this.frozen || !this.current) return;
    this.frozen = true;
    this.current.ranMs += Date.now() - this.runningSince;
    if (this.agent && this.agent.exitCode === null) this.agent.kill("SIGSTOP");
  }

  thaw(): void {
    if (!this.frozen) return;
    this.frozen = false;
    this.runningSince = Date.now();
    if (this.agent && this.agent.exitCode === null) this.agent.kill("SIGCONT");
  }

  /** The state a snapshot saves (only while frozen, as Firecracker only snapshots a paused VM). */
  state(): GuestState {
    return { ...this.current!, files: readTree(this.opts.root) };
  }

  /**
   * Continues a saved guest: same boot id and run time, no boot. A restored guest's agent is
   * already running in its RAM, so this resolves once the stand-in agent process listens.
   */
  async restore(saved: GuestState, paused: boolean): Promise<void> {
    const { files, ...rest } = saved;
    this.current = rest;
    rmSync(this.opts.root, { recursive: true, force: true });
    for (const [p, text] of Object.entries(files ?? {})) {
      mkdirSync(dirname(join(this.opts.root, p)), { recursive: true });
      writeFileSync(join(this.opts.root, p), text);
    }
    this.runningSince = Date.now();
    this.opts.write(`[ ${(saved.ranMs / 1000).toFixed(6)}] fake guest ${saved.bootId} restored from snapshot\n`);
    this.agentUp();
    for (const deadline = Date.now() + 5000; !existsSync(this.opts.agentSocket) && this.agent?.exitCode === null && Date.now() < deadline; ) await Bun.sleep(2);
    if (paused) this.freeze();
  }

  /** The socket a vsock CONNECT to `port` reaches, or null when nothing listens there yet. */
  listener(port: number): string | null {
    if (port !== AGENT_PORT || !this.up || !this.agent || !existsSync(this.opts.agentSocket)) return null;
    return this.opts.agentSocket;
  }

  private agentUp(): void {
    this.prestart();
    this.up = true;
    this.opts.write("[    0.900000] banger-agent: started\n");
  }

  private startAgent(): void {
    if (this.stopped) return;
    rmSync(this.opts.agentSocket, { force: true });
    // pdeathsig ends the agent even when the fake is SIGKILLed, as a guest dies with its VMM.
    const wrap = Bun.which("setpriv") ? ["setpriv", "--pdeathsig", "KILL", "--"] : [];
    mkdirSync(this.opts.root, { recursive: true, mode: 0o700 });
    this.agent = Bun.spawn([...wrap, ...this.opts.agentArgv, "--unix", this.opts.agentSocket], {
      env: { ...process.env, BANGER_AGENT_PRETEND_ROOT: this.opts.root },
      stdin: "ignore",
      stdout: "inherit",
      stderr: "inherit",
    });
  }

  /** Ends the agent; called whenever the fake exits. */
  halt(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.agent && this.agent.exitCode === null) this.agent.kill("SIGKILL");
    rmSync(this.opts.agentSocket, { force: true });
    rmSync(this.opts.root, { recursive: true, force: true });
  }
}
