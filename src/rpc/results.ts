/**
 * What each RPC method answers. The domain owns these types (vm/, store/, agent/); the wire maps
 * to them, so a handler and its caller agree at compile time and no caller casts.
 */
import type { AgentHealth } from "../agent/protocol.ts";
import type { ImageRow, KernelRow } from "../store/artifacts.ts";
import type { SshInfo, VmLogs, VmView } from "../vm/model.ts";

export type { SshInfo, VmLogs };
import type { PortsView } from "../vm/ports-view.ts";
import type { VmStats } from "../vm/reconcile.ts";
import type { FanoutResult } from "../vm/refs.ts";
import type { SnapshotInfo } from "../vm/snapshots.ts";
import type { GoldenInfo } from "../vm/warm.ts";

/** One named result of a per-VM action (snapshot create/restore/delete). */
export interface NamedMessage {
  name: string;
  message: string;
}

export interface ForkResult {
  copies: VmView[];
  errors: string[];
  ms: number;
}

/** What `daemon.status` answers. */
export interface DaemonStatus {
  pid: number;
  version: string;
  buildId: string;
  startedAt: string;
  uptimeS: number;
  busy: number;
  socket: string;
  log: string;
  vms: number;
  /** Where the `.vm` DNS server listens; "" when it could not (see dnsProblem). */
  dns: string;
  /** Why `.vm` DNS is not served on the host, and the fix. */
  dnsProblem?: { message: string; hint?: string };
}

/** The methods that act on several VMs and answer one result per VM. */
export type FanMethod = "vm.start" | "vm.pause" | "vm.resume" | "vm.suspend" | "vm.stop" | "vm.restart" | "vm.kill" | "vm.delete" | "vm.set";

export interface Results {
  "daemon.status": DaemonStatus;
  "vm.create": VmView & { warnings: string[] };
  "vm.start": FanoutResult[];
  "vm.pause": FanoutResult[];
  "vm.resume": FanoutResult[];
  "vm.suspend": FanoutResult[];
  "vm.stop": FanoutResult[];
  "vm.restart": FanoutResult[];
  "vm.kill": FanoutResult[];
  "vm.delete": FanoutResult[];
  "vm.set": FanoutResult[];
  "vm.fork": ForkResult;
  "vm.snapshot.create": NamedMessage;
  "vm.snapshot.list": SnapshotInfo[];
  "vm.snapshot.restore": NamedMessage;
  "vm.snapshot.delete": NamedMessage;
  "vm.list": VmView[];
  "vm.show": VmView;
  "vm.logs": VmLogs;
  "vm.stats": VmStats[];
  "vm.health": AgentHealth & { name: string };
  "vm.ports": PortsView;
  "vm.ssh-info": SshInfo;
  "kernel.list": KernelRow[];
  "kernel.show": KernelRow;
  "image.list": ImageRow[];
  "cache.list": GoldenInfo[];
  "cache.prune": { key: string; reason: string }[];
  "image.show": ImageRow;
}
