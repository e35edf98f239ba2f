/**
 * Firecracker snapshots (API v1.16.1): `PUT /snapshot/create` on a paused VM writes the device
 * state and the guest memory; `PUT /snapshot/load` on a fresh process (only logger and metrics
 * configured) maps the memory file privately and re-attaches the plan's TAP and vsock socket
 * through `network_overrides` and `vsock_override`.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { BangerError } from "../../errors.ts";
import type { FirecrackerApi } from "./firecracker-api.ts";
import type { BootPlan, SavedStateFiles, SavedStateMeta } from "./types.ts";

/** "1.16.1" from `firecracker --version` (first line "Firecracker v1.16.1"), or null. */
export function firecrackerBinaryVersion(argv: string[]): string | null {
  const r = spawnSync(argv[0]!, [...argv.slice(1), "--version"], { encoding: "utf8", timeout: 10_000 });
  return /v(\d+\.\d+\.\d+)/.exec(r.stdout ?? "")?.[1] ?? null;
}

/** Firecracker loads only snapshots of its own version here (banger never converts them). */
export function firecrackerRestoreProblem(meta: SavedStateMeta, version: string | null): string | null {
  if (meta.vmm !== "firecracker") return `the saved state was written by ${meta.vmm}, not Firecracker`;
  if (version !== meta.version)
    return `the saved state was written by Firecracker ${meta.version} and this host runs Firecracker ${version ?? "(unknown version)"}`;
  return null;
}

/** Pauses the VM and writes a full snapshot; the process stays (paused) for the caller to end. */
export async function firecrackerSaveState(api: FirecrackerApi, files: SavedStateFiles, now: () => number): Promise<SavedStateMeta> {
  const version = (await api.request("GET", "/version")).body?.firecracker_version ?? "unknown";
  await api.request("PATCH", "/vm", { state: "Paused" });
  await api.request("PUT", "/snapshot/create", { snapshot_type: "Full", snapshot_path: files.state, mem_file_path: files.memory });
  return { vmm: "firecracker", version, accel: "kvm", savedAt: new Date(now()).toISOString() };
}

/** The load request for a plan: memory from the File backend, this plan's TAP and agent socket. */
export function snapshotLoadBody(plan: BootPlan, files: SavedStateFiles, agentSocket: string) {
  return {
    snapshot_path: files.state,
    mem_backend: { backend_type: "File", backend_path: files.memory },
    resume_vm: true,
    ...(plan.nic ? { network_overrides: [{ iface_id: "eth0", host_dev_name: plan.nic.tap }] } : {}),
    vsock_override: { uds_path: agentSocket },
  };
}

/** Loads the snapshot into a fresh Firecracker and resumes it. */
export async function firecrackerLoadState(api: FirecrackerApi, plan: BootPlan, files: SavedStateFiles, agentSocket: string): Promise<void> {
  for (const f of [files.state, files.memory]) {
    if (!existsSync(f))
      throw new BangerError("not_found", `the saved state file ${f} is missing`, { hint: "Start the VM cold instead (banger vm start --cold)." });
  }
  await api.request("PUT", "/logger", { log_path: plan.vmmLog, level: "Info", show_level: true, show_log_origin: false });
  await api.request("PUT", "/snapshot/load", snapshotLoadBody(plan, files, agentSocket));
}
