import type { VmRow } from "../store/vms.ts";

/** What `vm create` asks for; unset fields take the config's defaults. The RPC contract's `vm.create` params are this. */
export interface VmCreateInput {
  name?: string;
  image?: string;
  kernel?: string;
  cpus?: number;
  /** MiB. */
  memory?: number;
  /** Bytes. */
  disk?: number;
  nat?: boolean;
  /** A network policy's text (none, nat, allow:<rules>); the service parses it. */
  net?: string;
  group?: string;
  start?: boolean;
  cold?: boolean;
}

/** What `vm set` changes on a VM; unset fields stay. The RPC contract's `vm.set` params are this plus the VMs. */
export type VmSetInput = Pick<VmCreateInput, "cpus" | "memory" | "disk" | "nat" | "net" | "group">;

/** One progress event of a long operation (a create step started, done, failed, or a note). */
export interface ProgressEvent {
  stage: string;
  status: "start" | "done" | "failed" | "info";
  elapsedMs?: number;
  message?: string;
}

/** What a long operation receives from its caller: progress reporting and cancellation. */
export interface CallContext {
  progress(event: ProgressEvent): void;
  signal: AbortSignal;
}

/** How to reach a VM over ssh; the client checks every field before it goes on a command line. */
export interface SshInfo {
  name: string;
  state: string;
  ip: string;
  user: string;
  key: string;
  host_key: string;
}

/** A VM's console and VMM log tails. */
export interface VmLogs {
  name: string;
  console_log: string;
  vmm_log: string;
  console: string;
  vmm: string;
}

/** A VM as the CLI sees it. */
export interface VmView {
  id: string;
  name: string;
  dns: string;
  state: VmRow["state"];
  image: string;
  kernel: string;
  vmm: VmRow["vmm"];
  cpus: number;
  memory_mib: number;
  disk_bytes: number;
  nat: boolean;
  net: string;
  group: string;
  ip: string;
  mac: string;
  cid: number;
  tap: string;
  pid: number | null;
  dir: string;
  created_at: string;
  started_at: string | null;
  last_error: string | null;
}

export function toView(vm: VmRow, pid: number | null, dir: string): VmView {
  return {
    id: vm.id,
    name: vm.name,
    dns: `${vm.name}.vm`,
    state: vm.state,
    image: vm.image,
    kernel: vm.kernel,
    vmm: vm.vmm,
    cpus: vm.cpus,
    memory_mib: vm.memory_mib,
    disk_bytes: vm.disk_bytes,
    nat: vm.nat,
    net: vm.net,
    group: vm.net_group,
    ip: vm.ip,
    mac: vm.mac,
    cid: vm.cid,
    tap: vm.tap,
    pid,
    dir,
    created_at: vm.created_at,
    started_at: vm.started_at,
    last_error: vm.last_error,
  };
}

const ADJ = ["brisk", "calm", "deft", "eager", "fond", "glad", "keen", "lucid", "merry", "nimble", "proud", "quick", "sunny", "tidy", "witty", "zesty"];
const NOUN = ["otter", "heron", "lynx", "finch", "panda", "koala", "gecko", "tapir", "bison", "crane", "moose", "llama", "raven", "robin", "viper", "yak"];

/** A friendly default name not already taken. */
export function randomName(taken: Set<string>): string {
  for (;;) {
    const n = `${ADJ[Math.floor(Math.random() * ADJ.length)]}-${NOUN[Math.floor(Math.random() * NOUN.length)]}`;
    const name = taken.has(n) ? `${n}-${Math.floor(Math.random() * 1000)}` : n;
    if (!taken.has(name)) return name;
  }
}
