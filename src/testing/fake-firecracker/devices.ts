import { closeSync, existsSync, openSync } from "node:fs";

/** Thrown by a config step; becomes a 400 with this fault message. */
export class FaultError extends Error {}

type Body = Record<string, unknown>;

/** Everything configured through the API, in the shape GET /vm/config reports. */
export interface VmConfig {
  machine: { vcpu_count: number; mem_size_mib: number; smt: boolean; track_dirty_pages: boolean; huge_pages: string };
  bootSource: { kernel_image_path: string; initrd_path: string | null; boot_args: string | null } | null;
  drives: Map<string, Body>;
  nics: Map<string, Body>;
  vsock: { guest_cid: number; uds_path: string } | null;
  logger: Body | null;
  metrics: { metrics_path: string } | null;
  /** Other pre-boot resources the fake accepts but does not model (balloon, entropy, serial, ...). */
  other: Map<string, Body>;
}

/** A fresh process's configuration: Firecracker's defaults. */
export function defaultConfig(): VmConfig {
  return {
    machine: { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false, huge_pages: "None" },
    bootSource: null,
    drives: new Map(),
    nics: new Map(),
    vsock: null,
    logger: null,
    metrics: null,
    other: new Map(),
  };
}

// Rust's io::Error Display for the errnos a test can provoke.
const OS_ERRORS: Record<string, [number, string, string]> = {
  ENOENT: [2, "NotFound", "No such file or directory"],
  EACCES: [13, "PermissionDenied", "Permission denied"],
  EISDIR: [21, "IsADirectory", "Is a directory"],
  ENOTDIR: [20, "NotADirectory", "Not a directory"],
  EROFS: [30, "ReadOnlyFilesystem", "Read-only file system"],
};

function osError(err: unknown): [number, string, string] {
  const code = (err as NodeJS.ErrnoException).code ?? "";
  return OS_ERRORS[code] ?? [5, "Other", (err as Error).message];
}

/** `No such file or directory (os error 2)`, as Rust prints an io::Error. */
export function ioDisplay(err: unknown): string {
  const [n, , text] = osError(err);
  return `${text} (os error ${n})`;
}

/** Opens a file the way Firecracker does at PUT time, so a bad path fails the request. */
export function probeOpen(path: string, flags: "r" | "r+" | "a"): void {
  closeSync(openSync(path, flags));
}

/** PUT/PATCH /machine-config with Firecracker's range rules. */
export function setMachineConfig(cfg: VmConfig, body: Body, partial: boolean): void {
  const next = { ...(partial ? cfg.machine : defaultConfig().machine), ...body } as VmConfig["machine"];
  const v = next.vcpu_count;
  if (v < 1 || v > 32 || (next.smt && v > 1 && v % 2 === 1)) {
    throw new FaultError("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.");
  }
  if (next.mem_size_mib === 0) throw new FaultError("The memory size (MiB) is invalid.");
  if (next.huge_pages === "2M" && next.mem_size_mib % 2 !== 0) {
    throw new FaultError("The memory size (MiB) is either 0, or not a multiple of the configured page size.");
  }
  cfg.machine = next;
}

/** PUT /boot-source: the kernel (and initrd) must open now. */
export function setBootSource(cfg: VmConfig, body: Body): void {
  const kernel = body.kernel_image_path as string;
  try {
    probeOpen(kernel, "r");
  } catch (err) {
    throw new FaultError(`Boot source error: The kernel file cannot be opened: ${ioDisplay(err)}`);
  }
  const initrd = (body.initrd_path as string | undefined) ?? null;
  if (initrd) {
    try {
      probeOpen(initrd, "r");
    } catch (err) {
      throw new FaultError(`Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. ${ioDisplay(err)}`);
    }
  }
  cfg.bootSource = { kernel_image_path: kernel, initrd_path: initrd, boot_args: (body.boot_args as string | undefined) ?? null };
}

/** PUT /drives/{id}: one root device at most; the backing file opens read-write unless read-only. */
export function setDrive(cfg: VmConfig, body: Body): void {
  const id = body.drive_id as string;
  if (body.is_root_device) {
    for (const [other, d] of cfg.drives) {
      if (other !== id && d.is_root_device) throw new FaultError("Drive config error: A root block device already exists!");
    }
  }
  const path = body.path_on_host as string | undefined;
  if (path === undefined) throw new FaultError("Drive config error: Unable to create the virtio block device: path_on_host is required");
  openDrive(path, body.is_read_only === true, "Drive config error: Unable to create the virtio block device: ");
  cfg.drives.set(id, {
    drive_id: id,
    partuuid: body.partuuid ?? null,
    is_root_device: body.is_root_device,
    cache_type: body.cache_type ?? "Unsafe",
    is_read_only: body.is_read_only ?? false,
    path_on_host: path,
    rate_limiter: body.rate_limiter ?? null,
    io_engine: body.io_engine ?? "Sync",
    socket: null,
  });
}

/** PUT /network-interfaces/{id}: the TAP must exist on the host. */
export function setNic(cfg: VmConfig, body: Body, sysClassNet = "/sys/class/net"): void {
  const tap = body.host_dev_name as string;
  const mtu = body.mtu as number | undefined;
  if (mtu !== undefined && (mtu < 68 || mtu > 65535)) throw new FaultError(`Could not create the network device: Invalid MTU ${mtu}`);
  if (body.guest_mac !== undefined && !/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(body.guest_mac as string)) {
    throw new FaultError(`An error occurred when deserializing the json body of a request: invalid MAC address: ${body.guest_mac}.`);
  }
  for (const [other, n] of cfg.nics) {
    if (other !== body.iface_id && n.host_dev_name === tap) {
      throw new FaultError(`The host device name ${tap} is already in use.`);
    }
  }
  openTap(tap, sysClassNet, "Could not create the network device: ");
  cfg.nics.set(body.iface_id as string, {
    iface_id: body.iface_id,
    host_dev_name: tap,
    guest_mac: body.guest_mac ?? null,
    rx_rate_limiter: body.rx_rate_limiter ?? null,
    tx_rate_limiter: body.tx_rate_limiter ?? null,
  });
}

/** Opens a TAP as Firecracker does (TUNSETIFF): a missing device or one that is not TUN/TAP fails. */
export function openTap(tap: string, sysClassNet: string, prefix: string): void {
  const missing = !tap || !existsSync(`${sysClassNet}/${tap}`);
  if (missing || !existsSync(`${sysClassNet}/${tap}/tun_flags`)) {
    const os = missing ? "No such device (os error 19)" : "Invalid argument (os error 22)";
    throw new FaultError(
      `${prefix}Open tap device failed: Error while creating ifreq structure: ${os}. Invalid TUN/TAP Backend provided by ${tap}. ` +
        "Check our documentation on setting up the network devices.",
    );
  }
}

/** Opens a drive's backing file as Firecracker does; `prefix` names where (config or snapshot load). */
export function openDrive(path: string, readOnly: boolean, prefix: string): void {
  try {
    probeOpen(path, readOnly ? "r" : "r+");
  } catch (err) {
    const [n, kind, text] = osError(err);
    throw new FaultError(`${prefix}BackingFile(Os { code: ${n}, kind: ${kind}, message: ${JSON.stringify(text)} }, ${JSON.stringify(path)})`);
  }
}

/** GET /vm/config: every resource, in Firecracker's export shape. */
export function exportConfig(cfg: VmConfig): Body {
  const other = (k: string) => cfg.other.get(k) ?? null;
  return {
    balloon: other("balloon"),
    drives: [...cfg.drives.values()],
    "boot-source": cfg.bootSource,
    "cpu-config": other("cpu-config"),
    logger: cfg.logger,
    "machine-config": cfg.machine,
    metrics: cfg.metrics,
    "mmds-config": other("mmds/config"),
    "network-interfaces": [...cfg.nics.values()],
    pmem: [],
    vsock: cfg.vsock,
    entropy: other("entropy"),
  };
}
