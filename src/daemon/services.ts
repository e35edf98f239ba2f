import type { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { configDurations, configSizes, type Config } from "../config.ts";
import { BangerError } from "../errors.ts";
import type { DnsGuests } from "../host/dns-policy.ts";
import { startDnsServer, type DnsServer } from "../host/dns-server.ts";
import type { Paths } from "../host/paths.ts";
import { hostUpstreams } from "../host/resolv.ts";
import { hostRunner } from "../host/runner.ts";
import { ensureSshKey } from "../host/sshkey.ts";
import type { Handlers } from "../rpc/handle.ts";
import { ArtifactStore } from "../store/artifacts.ts";
import { VmStore } from "../store/vms.ts";
import { FirecrackerDriver } from "../vm/drivers/firecracker.ts";
import { QemuDriver } from "../vm/drivers/qemu.ts";
import type { Driver, VmmKind } from "../vm/drivers/types.ts";
import type { NetworkPort } from "../vm/deps.ts";
import { GUEST_DNS_PORT, hostNetworkPort } from "../vm/network-port.ts";
import { ConsoleCap } from "../vm/console-log.ts";
import { vmDnsGuests } from "../vm/dns-guests.ts";
import { reconcile, StatsPoller } from "../vm/reconcile.ts";
import { VmService } from "../vm/service.ts";
import { AGENT_VERSION } from "../version.ts";
import { vmHandlers } from "./vm-handlers.ts";
import type { AgentFor } from "./exec-server.ts";
import { artifactHandlers } from "./artifact-handlers.ts";
import { ImageService } from "../images/image-service.ts";
import { KernelService } from "../images/kernel-service.ts";

export interface ServiceDeps {
  paths: Paths;
  config: Config;
  db: Database;
  log(msg: string): void;
}

/** The daemon's services and the RPC handlers they provide. */
export interface Services {
  handlers: Handlers;
  vmCount(): number;
  /** Where the `.vm` DNS server answers (the configured address, with the real port when 0 was asked); "" when it could not listen. */
  dnsAddress: string;
  /** A running VM's agent client, for the exec socket. */
  agentFor: AgentFor;
  /** Why the `.vm` DNS server is not listening (its address was taken), with the fix; absent when it listens. */
  dnsProblem?: { message: string; hint?: string };
  close(): Promise<void>;
}

/** The guest agent binary shipped beside this executable (or in dist/ when run from source). */
export function agentBinaryPath(): string | null {
  const candidates = [join(dirname(process.execPath), "banger-agent"), join(import.meta.dir, "../../dist/banger-agent")];
  return candidates.find((p) => existsSync(p)) ?? null;
}

/** The VMM drivers, each made on first use. */
function driverCache(config: Config, log: (msg: string) => void): (kind: VmmKind) => Driver {
  const drivers = new Map<VmmKind, Driver>();
  return (kind) => {
    let d = drivers.get(kind);
    if (!d) {
      d =
        kind === "firecracker"
          ? new FirecrackerDriver({ bin: config.firecracker_bin })
          : new QemuDriver({ bin: config.qemu_bin, accel: config.accel, warn: (m) => log(`warning: ${m}`) });
      drivers.set(kind, d);
    }
    return d;
  };
}

/** The test seams end-to-end tests set on the daemon they start: the only place they are read from the environment. */
export function envTestSeams(env: Record<string, string | undefined> = process.env) {
  return {
    skipSsh: env.BANGER_SKIP_SSH_WAIT === "1",
    failAt: () => env.BANGER_FAIL_AT_STEP || undefined,
    pauseAt: () => env.BANGER_PAUSE_AT_STEP || undefined,
  };
}

interface Domain {
  vms: VmService;
  vmStore: VmStore;
  images: ImageService;
  kernels: KernelService;
  network: NetworkPort;
  records: Map<string, string>;
}

/** The VM, image and kernel services over the real host, stores and drivers. */
function buildDomain(deps: ServiceDeps): Domain {
  const { config, paths, log } = deps;
  const durations = configDurations(config);
  const runner = hostRunner;
  const records = new Map<string, string>();
  const network = hostNetworkPort(config, { runner, sudo: process.getuid?.() !== 0 });
  const keyPath = config.ssh_key || paths.sshKey;
  const vmStore = new VmStore(deps.db);
  const seams = envTestSeams();
  const artifactDeps = {
    paths,
    config,
    store: new ArtifactStore(deps.db),
    runner,
    usersOf: (what: { image?: string; kernel?: string }) => vms.usersOf(what),
    agentBinary: agentBinaryPath,
  };
  const images = new ImageService(artifactDeps);
  const vms = new VmService({
    paths,
    config,
    vms: vmStore,
    artifacts: artifactDeps.store,
    runner,
    drivers: driverCache(config, log),
    defaultVmm: () => (config.vmm === "auto" ? (Bun.which(config.firecracker_bin) ? "firecracker" : "qemu") : config.vmm),
    network,
    dns: { set: (n, ip) => records.set(n, ip), delete: (n) => records.delete(n), clear: () => records.clear() },
    log,
    agent: { version: AGENT_VERSION, binaryPath: agentBinaryPath() },
    sshKey: async () => ({ path: keyPath, publicKey: await ensureSshKey(keyPath, runner) }),
    readiness: { agentTimeoutMs: durations.bootTimeoutMs, sshTimeoutMs: durations.bootTimeoutMs, skipSsh: seams.skipSsh, stopGraceMs: durations.stopGraceMs },
    failAt: seams.failAt,
    pullImage: async (name) => void (await images.pull(name)),
    pauseAt: seams.pauseAt,
  });
  return { vms, vmStore, images, kernels: new KernelService(artifactDeps), network, records };
}

/** Builds the real services from the composition root's dependencies. */
export async function buildServices(deps: ServiceDeps): Promise<Services> {
  const { config, paths, log } = deps;
  const { vms, vmStore, images, kernels, network, records } = buildDomain(deps);
  await ensureSshKey(config.ssh_key || paths.sshKey, hostRunner);
  const servers: DnsServer[] = [];
  const dns = await startHostDns(config.dns_listen, records, log);
  if ("server" in dns) servers.push(dns.server);
  const guests = vmDnsGuests({ vms: vmStore, records: () => records, network });
  const guestDns = await startGuestDns({ gateway: network.gateway().ip, upstream: config.dns_upstream, records, guests, log });
  if (guestDns) servers.push(guestDns);
  await reconcile(vms);
  const consoles = new ConsoleCap(configSizes(config).consoleLogMaxBytes, log);
  const poller = new StatsPoller(vms, consoles);
  poller.trackConsoles();
  poller.start(configDurations(config).statsPollMs);
  return {
    handlers: { ...vmHandlers(vms, poller), ...artifactHandlers(kernels, images) },
    vmCount: () => vms.count(),
    agentFor: (ref) => {
      const vm = vms.find(ref);
      return { client: vms.agent(vm), ip: vm.ip ?? "" };
    },
    dnsAddress: "server" in dns ? `${dns.server.address.host}:${dns.server.address.port}` : "",
    dnsProblem: "problem" in dns ? dns.problem : undefined,
    close: async () => {
      poller.stop();
      consoles.close();
      for (const s of servers) await s.close();
      vms.closeAgents();
    },
  };
}

/**
 * The host's `.vm` resolver at dns_listen. A taken address (another user's daemon on the same
 * host, say) does not stop the daemon: it runs without that listener and says why.
 */
async function startHostDns(
  listen: string,
  records: Map<string, string>,
  log: (m: string) => void,
): Promise<{ server: DnsServer } | { problem: { message: string; hint?: string } }> {
  try {
    return { server: await startDnsServer({ listen, records: () => records, log }) };
  } catch (err) {
    if (!(err instanceof BangerError) || err.code !== "unavailable") throw err;
    log(`warning: .vm DNS not listening: ${err.message}`);
    return { problem: { message: err.message, hint: err.hint } };
  }
}

/**
 * The resolver guests use: each asking VM (known by its address) gets `.vm` names of itself
 * and its group, and other names as its policy allows, from `dns_upstream` or the host's upstreams.
 */
async function startGuestDns(o: {
  gateway: string;
  upstream: string[];
  records: Map<string, string>;
  guests: DnsGuests;
  log: (m: string) => void;
}): Promise<DnsServer | null> {
  const { gateway, records, guests, log } = o;
  try {
    const upstream = o.upstream.length ? o.upstream : await hostUpstreams();
    return await startDnsServer({ listen: `${gateway}:${GUEST_DNS_PORT}`, records: () => records, upstream, guests, configKey: "subnet", log });
  } catch (err) {
    log(
      `guest DNS on ${gateway}:${GUEST_DNS_PORT} not started (${(err as Error).message}); ` +
        "guests resolve .vm names only after `sudo banger host setup` and a daemon restart",
    );
    return null;
  }
}
