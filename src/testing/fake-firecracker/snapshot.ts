/**
 * The fake's snapshot files: the state file holds the VM configuration and the pretend guest's
 * state; the memory file holds the guest state again (as Firecracker's holds guest RAM), padded
 * sparse to the VM's memory size. Requests are checked with Firecracker's rules and messages.
 */
import { closeSync, existsSync, ftruncateSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from "node:fs";
import { FaultError, ioDisplay, openDrive, openTap, type VmConfig } from "./devices.ts";
import type { GuestState } from "./guest.ts";

type Body = Record<string, unknown>;

/** What the fake writes to snapshot_path. */
interface SnapshotFile {
  fake_firecracker_snapshot: 1;
  version: string;
  machine: VmConfig["machine"];
  bootSource: VmConfig["bootSource"];
  drives: Body[];
  nics: Body[];
  vsock: VmConfig["vsock"];
  guest: GuestState;
}

/** PUT /snapshot/create: only a paused VM; Diff needs dirty page tracking. */
export function createSnapshot(cfg: VmConfig, state: string, version: string, guest: GuestState, body: Body): void {
  if (state !== "Paused")
    throw new FaultError("Create snapshot error: Cannot save the microVM state: Operation not allowed: save/restore unavailable while running");
  if (body.snapshot_type === "Diff" && !cfg.machine.track_dirty_pages) {
    throw new FaultError("Diff snapshots are not allowed on uVMs with dirty page tracking disabled.");
  }
  const snap: SnapshotFile = {
    fake_firecracker_snapshot: 1,
    version,
    machine: cfg.machine,
    bootSource: cfg.bootSource,
    drives: [...cfg.drives.values()],
    nics: [...cfg.nics.values()],
    vsock: cfg.vsock,
    guest,
  };
  try {
    writeFileSync(body.snapshot_path as string, JSON.stringify(snap));
  } catch (err) {
    throw new FaultError(`Create snapshot error: Cannot write the microVM state to the snapshot file: ${ioDisplay(err)}`);
  }
  try {
    const fd = openSync(body.mem_file_path as string, "w");
    writeSync(fd, JSON.stringify(guest));
    ftruncateSync(fd, cfg.machine.mem_size_mib * 1024 * 1024);
    closeSync(fd);
  } catch (err) {
    throw new FaultError(`Create snapshot error: Cannot write the guest memory to the memory file: ${ioDisplay(err)}`);
  }
}

/** True once anything but the logger and metrics is configured (then a load is refused). */
export function bootResourcesConfigured(cfg: VmConfig, machineTouched: boolean): boolean {
  return machineTouched || cfg.bootSource !== null || cfg.drives.size > 0 || cfg.nics.size > 0 || cfg.vsock !== null || cfg.other.size > 0;
}

const LOAD = "Load snapshot error: ";

/** Checks a PUT /snapshot/load body and reads the files; returns the snapshot with overrides applied. */
export function readSnapshotForLoad(body: Body): { snap: SnapshotFile; memGuest: GuestState } {
  const hasFile = body.mem_file_path !== undefined;
  const hasBackend = body.mem_backend !== undefined;
  if (hasFile && hasBackend)
    throw new FaultError(
      "An error occurred when deserializing the json body of a request: too many fields: either `mem_backend` or `mem_file_path` exclusively is required.",
    );
  if (!hasFile && !hasBackend)
    throw new FaultError(
      "An error occurred when deserializing the json body of a request: missing field: either `mem_backend` or `mem_file_path` is required.",
    );
  const backend = body.mem_backend as { backend_type: string; backend_path: string } | undefined;
  if (backend?.backend_type === "Uffd") throw new FaultError(`${LOAD}Failed to restore from snapshot: the fake supports only the File memory backend`);
  const memPath = (backend?.backend_path ?? body.mem_file_path) as string;
  let snap: SnapshotFile;
  try {
    snap = JSON.parse(readFileSync(body.snapshot_path as string, "utf8")) as SnapshotFile;
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ? ioDisplay(err) : "the file is not a snapshot";
    throw new FaultError(`${LOAD}Failed to restore from snapshot: Failed to get snapshot state from file: Failed to load snapshot state from file: ${why}`);
  }
  if (!existsSync(memPath)) {
    throw new FaultError(
      `${LOAD}Failed to restore from snapshot: Failed to load guest memory: Error creating guest memory from file: No such file or directory (os error 2)`,
    );
  }
  const memText = readHead(memPath, 64 * 1024).replace(/\0[\s\S]*$/, "");
  const memGuest = JSON.parse(memText) as GuestState;
  applyOverrides(snap, body);
  openDevices(snap);
  return { snap, memGuest };
}

/**
 * Firecracker re-opens every device of the snapshot at load: drives by their recorded
 * `path_on_host` (a relative one from the process's working directory, which is how one snapshot
 * is loaded against another directory's disks) and TAPs by name after `network_overrides`.
 */
function openDevices(snap: SnapshotFile, sysClassNet = "/sys/class/net"): void {
  const restore = `${LOAD}Failed to restore from snapshot: Failed to build microVM from snapshot: `;
  for (const d of snap.drives) openDrive(d.path_on_host as string, d.is_read_only === true, `${restore}Block device error: `);
  for (const n of snap.nics) openTap(n.host_dev_name as string, sysClassNet, `${restore}Net device error: `);
}

/** The first bytes of a (large, sparse) file, without reading the rest. */
function readHead(path: string, bytes: number): string {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(bytes);
    return buf.subarray(0, readSync(fd, buf, 0, bytes, 0)).toString("utf8");
  } finally {
    closeSync(fd);
  }
}

/** network_overrides and vsock_override: each must name a device the snapshot has. */
function applyOverrides(snap: SnapshotFile, body: Body): void {
  for (const o of (body.network_overrides as Array<{ iface_id: string; host_dev_name: string }> | undefined) ?? []) {
    const nic = snap.nics.find((n) => n.iface_id === o.iface_id);
    if (!nic)
      throw new FaultError(`${LOAD}Failed to restore from snapshot: Invalid network configuration override: no network interface with id ${o.iface_id}`);
    nic.host_dev_name = o.host_dev_name;
  }
  const vsock = body.vsock_override as { uds_path: string } | undefined;
  if (vsock) {
    if (!snap.vsock) throw new FaultError(`${LOAD}Failed to restore from snapshot: Invalid vsock override: the snapshot has no vsock device`);
    snap.vsock = { ...snap.vsock, uds_path: vsock.uds_path };
  }
}

/** Puts a loaded snapshot's devices into the configuration. */
export function restoreConfig(cfg: VmConfig, snap: SnapshotFile): void {
  cfg.machine = snap.machine;
  cfg.bootSource = snap.bootSource;
  for (const d of snap.drives) cfg.drives.set(d.drive_id as string, d);
  for (const n of snap.nics) cfg.nics.set(n.iface_id as string, n);
}
