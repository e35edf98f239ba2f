import { homedir } from "node:os";
import { join } from "node:path";

/** Every path banger uses on disk, derived from the XDG base directories. */
export interface Paths {
  home: string;
  configDir: string;
  configFile: string;
  stateDir: string;
  dbFile: string;
  vmsDir: string;
  imagesDir: string;
  kernelsDir: string;
  sshDir: string;
  sshKey: string;
  knownHosts: string;
  sshConfigFile: string;
  cacheDir: string;
  runtimeDir: string;
  socket: string;
  /** Where the daemon streams `vm exec` (frames, not JSON RPC). */
  execSocket: string;
  daemonLock: string;
  spawnLock: string;
  daemonPidFile: string;
  daemonLog: string;
}

/** Resolves the layout from the environment (HOME and XDG_* variables). */
export function resolvePaths(env: Record<string, string | undefined> = process.env): Paths {
  const home = env.HOME || homedir();
  const configDir = join(env.XDG_CONFIG_HOME || join(home, ".config"), "banger");
  const stateDir = join(env.XDG_STATE_HOME || join(home, ".local", "state"), "banger");
  const cacheDir = join(env.XDG_CACHE_HOME || join(home, ".cache"), "banger");
  // Never a shared /tmp name: another user could create it first and answer as the daemon.
  const runtimeDir = env.XDG_RUNTIME_DIR ? join(env.XDG_RUNTIME_DIR, "banger") : join(stateDir, "run");
  const sshDir = join(stateDir, "ssh");
  return {
    home,
    configDir,
    configFile: join(configDir, "config.toml"),
    stateDir,
    dbFile: join(stateDir, "state.db"),
    vmsDir: join(stateDir, "vms"),
    imagesDir: join(stateDir, "images"),
    kernelsDir: join(stateDir, "kernels"),
    sshDir,
    sshKey: join(sshDir, "id_ed25519"),
    knownHosts: join(sshDir, "known_hosts"),
    sshConfigFile: join(sshDir, "ssh_config"),
    cacheDir,
    runtimeDir,
    socket: join(runtimeDir, "banger.sock"),
    execSocket: join(runtimeDir, "exec.sock"),
    daemonLock: join(runtimeDir, "daemon.lock"),
    spawnLock: join(runtimeDir, "spawn.lock"),
    daemonPidFile: join(runtimeDir, "daemon.pid"),
    daemonLog: join(stateDir, "daemon.log"),
  };
}

/** Paths inside one VM's directory. */
export function vmPaths(paths: Paths, vmId: string) {
  const dir = join(paths.vmsDir, vmId);
  return {
    dir,
    handles: join(dir, "handles.json"),
    overlay: join(dir, "overlay.ext4"),
    workDisk: join(dir, "work.ext4"),
    configDrive: join(dir, "config.ext4"),
    hostKey: join(dir, "ssh_host_ed25519_key"),
    consoleLog: join(dir, "console.log"),
    vmmLog: join(dir, "vmm.log"),
    metrics: join(dir, "metrics.json"),
    apiSocket: join(dir, "fc.sock"),
    qmpSocket: join(dir, "qmp.sock"),
    agentSocket: join(dir, "agent.sock"),
    /** Guest RAM (QEMU maps it shared; Firecracker writes snapshot memory here). */
    memory: join(dir, "ram"),
    /** Device state of a suspended VM and what it was saved with. */
    savedState: join(dir, "vmstate"),
    savedMeta: join(dir, "vmstate.json"),
    snapshotsDir: join(dir, "snapshots"),
  };
}

export type VmPaths = ReturnType<typeof vmPaths>;

/**
 * Where `host setup --systemd` puts what runs as root at boot: a root-owned copy of the banger
 * executable and a root-owned snapshot of the user's config (XDG_CONFIG_HOME for that run).
 */
export function bootInstallPaths(bridge: string) {
  const configHome = join("/etc/banger", `host-${bridge}`);
  return {
    binDir: "/usr/local/lib/banger",
    binary: "/usr/local/lib/banger/banger",
    configHome,
    configDirs: ["/etc/banger", configHome, join(configHome, "banger")],
    configFile: join(configHome, "banger", "config.toml"),
  };
}
