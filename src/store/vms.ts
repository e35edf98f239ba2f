import type { Database } from "bun:sqlite";
import { insertSql } from "./sql.ts";

/** What is persisted to tear a VM's host resources down even when handles.json is lost. */
export interface Teardown {
  pid?: number;
  pidStartTime?: string;
  controlSocket?: string;
  tap?: string;
  /** Set by banger versions that only knew NAT; read as netIp. */
  natIp?: string;
  /** The address whose per-VM firewall rules (anti-spoofing, egress, group) are in place. */
  netIp?: string;
}

/** paused: vCPUs frozen, RAM held; suspending/suspended: state being written / saved to the VM directory, no VMM. */
export type VmState = "creating" | "starting" | "running" | "paused" | "suspending" | "suspended" | "stopping" | "stopped" | "error";

/** A VM as stored: intent, identity, derived paths come from the id, allocation. */
export interface VmRow {
  id: string;
  name: string;
  image: string;
  kernel: string;
  vmm: "firecracker" | "qemu";
  cpus: number;
  memory_mib: number;
  disk_bytes: number;
  nat: boolean;
  /** The network policy in canonical text (none, nat, allow:<rules>); see vm/net-policy.ts. */
  net: string;
  /** The VM's group ("" for none): guests reach each other only within one group. */
  net_group: string;
  state: VmState;
  desired_state: "running" | "stopped";
  ip: string;
  mac: string;
  cid: number;
  tap: string;
  teardown: Teardown;
  last_error: string | null;
  created_at: string;
  updated_at: string;
  started_at: string | null;
}

type Raw = Omit<VmRow, "nat" | "teardown"> & { nat: number; teardown: string };

const fromRaw = (r: Raw): VmRow => ({ ...r, nat: Boolean(r.nat), teardown: safeJson(r.teardown) });

function safeJson(s: string): Teardown {
  try {
    return JSON.parse(s) as Teardown;
  } catch {
    return {};
  }
}

/** The columns of the vms table, in the order an insert lists them. */
const VM_COLUMNS: (keyof VmRow)[] = [
  "id",
  "name",
  "image",
  "kernel",
  "vmm",
  "cpus",
  "memory_mib",
  "disk_bytes",
  "nat",
  "net",
  "net_group",
  "state",
  "desired_state",
  "ip",
  "mac",
  "cid",
  "tap",
  "teardown",
  "last_error",
  "created_at",
  "updated_at",
  "started_at",
];

/** The vms table. */
export class VmStore {
  constructor(private readonly db: Database) {}

  list(): VmRow[] {
    return this.db.query<Raw, []>("SELECT * FROM vms ORDER BY created_at, name").all().map(fromRaw);
  }

  get(id: string): VmRow | null {
    const r = this.db.query<Raw, [string]>("SELECT * FROM vms WHERE id = ?").get(id);
    return r ? fromRaw(r) : null;
  }

  insert(vm: VmRow) {
    this.db.query(insertSql("vms", VM_COLUMNS)).run({ ...vm, nat: vm.nat ? 1 : 0, teardown: JSON.stringify(vm.teardown) } as never);
  }

  /** Updates some columns of one VM and stamps updated_at. */
  update(id: string, patch: Partial<Omit<VmRow, "id">>) {
    const cols = Object.keys(patch);
    if (!cols.length) return;
    const values: Record<string, unknown> = { id, updated_at: new Date().toISOString() };
    for (const c of cols) {
      const v = patch[c as keyof typeof patch];
      values[c] = c === "teardown" ? JSON.stringify(v) : c === "nat" ? (v ? 1 : 0) : v;
    }
    const set = [...cols.filter((c) => c !== "updated_at"), "updated_at"].map((c) => `${c} = $${c}`).join(", ");
    this.db.query(`UPDATE vms SET ${set} WHERE id = $id`).run(values as never);
  }

  delete(id: string) {
    this.db.query("DELETE FROM vms WHERE id = ?").run(id);
  }

  count(): number {
    return this.db.query<{ n: number }, []>("SELECT count(*) AS n FROM vms").get()!.n;
  }
}
