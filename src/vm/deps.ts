import type { AgentClient } from "../agent/client.ts";
import type { Config } from "../config.ts";
import type { Paths } from "../host/paths.ts";
import type { Runner } from "../host/runner.ts";
import type { ArtifactStore } from "../store/artifacts.ts";
import type { VmStore } from "../store/vms.ts";
import type { GroupMember, VmNet } from "./net-apply.ts";
import type { Driver, VmmHandle, VmmKind } from "./drivers/types.ts";

/** The host network as the VM service needs it (bridge and TAP pool are made by `host setup`). */
export interface NetworkPort {
  /** TAP names of the pool, in allocation order. */
  poolTaps(): string[];
  /** Throws failed_precondition (hint: host setup) when the TAP is missing or off the bridge. */
  checkTap(tap: string): Promise<void>;
  /**
   * Puts one VM's rules in place, replacing any earlier ones: its TAP carries only its MAC and
   * address, and its egress follows its policy. Idempotent.
   */
  applyVm(vm: VmNet): Promise<void>;
  /** Removes one VM's rules; a no-op when they are already gone. */
  removeVm(vm: { id: string; ip: string; tap: string }): Promise<void>;
  /** Replaces who may reach whom: guests reach each other only when they share a group. */
  setGroups(members: GroupMember[]): Promise<void>;
  /** The gateway (bridge) address and mask guests use. */
  gateway(): { ip: string; mask: string; prefix: number };
  /** Nameservers to give guests. */
  nameservers(): string[];
  /**
   * Opens a VM's egress to addresses its resolver returned for a name its `allow:` policy
   * lists, for `ttlSeconds`; private, link-local and host addresses are never added.
   */
  allowResolved(vmId: string, addrs: string[], ttlSeconds: number): Promise<void>;
}

/** `<name>.vm` records the DNS server answers. */
export interface DnsRecords {
  set(name: string, ip: string): void;
  delete(name: string): void;
  clear(): void;
}

/** Everything the VM service is built from; the daemon passes real parts, tests fakes. */
export interface VmServiceDeps {
  paths: Paths;
  config: Config;
  vms: VmStore;
  artifacts: ArtifactStore;
  runner: Runner;
  drivers: (kind: VmmKind) => Driver;
  /** Which VMM new VMs use (config vmm, auto = firecracker if found). */
  defaultVmm: () => VmmKind;
  network: NetworkPort;
  dns: DnsRecords;
  log(msg: string): void;
  /** The guest agent binary and version this build ships (pushed to guests with an older one). */
  agent: { version: string; binaryPath: string | null };
  /** Banger's SSH key pair: private key path and public key line. */
  sshKey(): Promise<{ path: string; publicKey: string }>;
  readiness: {
    agentTimeoutMs: number;
    sshTimeoutMs: number;
    /** Where no guest exists to log into (the fake Firecracker), the SSH wait is skipped. */
    skipSsh: boolean;
    stopGraceMs: number;
  };
  /** Pulls a missing image from the configured catalog (vm create's first use). */
  pullImage?: (name: string) => Promise<void>;
  /** Test seam: the create step (or named point of suspend, fork, warm start; see faultPoint) to fail at. */
  failAt?: () => string | undefined;
  /** Test seam: the step or point to wait before (until cancelled), logging "paused at <step>" so a test can crash the daemon there. */
  pauseAt?: () => string | undefined;
}

/** In-memory runtime state of running VMs. */
export interface Runtime {
  handles: Map<string, VmmHandle>;
  agents: Map<string, AgentClient>;
}
