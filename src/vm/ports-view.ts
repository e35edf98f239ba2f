/**
 * `vm ports`: turns the agent's listening sockets into rows a user can click. Pure apart
 * from the injected web probe.
 *
 * Which listeners are shown: the ones reachable from the host as `<name>.vm` (IPv4, since
 * banger's DNS answers A records): wildcard binds (0.0.0.0, ::, *) and specific IPv4
 * addresses. Loopback-only and other IPv6-only binds cannot be reached that way, so they
 * are hidden unless `all` is asked for, and then shown with their literal address.
 */
import type { ListeningSocket } from "../agent/protocol.ts";
import { printable } from "../printable.ts";

/** What a web probe found on a TCP port. */
export type WebScheme = "https" | "http";

/** Asks whether host:port speaks HTTPS or HTTP; null when neither (or no answer). */
export type Probe = (host: string, port: number) => Promise<WebScheme | null>;

/** One row of `vm ports`, also its `--json` element. */
export interface PortRow {
  proto: "tcp" | "udp";
  /** What the user types or clicks: `http://t1.vm:8080`, `t1.vm:5353`, or `127.0.0.1:5432` when not reachable. */
  endpoint: string;
  /** Reachable from the host as `<name>.vm`. */
  reachable: boolean;
  scheme?: WebScheme;
  address: string;
  port: number;
  pid?: number;
  process?: string;
  command?: string;
}

/** The whole `vm ports` answer. */
export interface PortsView {
  vm: string;
  ports: PortRow[];
  /** Listeners the agent reported beyond the most banger takes (see MAX_PORTS); absent when none. */
  dropped?: number;
}

/** Options for buildPortsView. */
export interface PortsViewOptions {
  vmName: string;
  /** Where the daemon can reach the guest (its IP); the probe connects there. */
  probeHost: string;
  probe: Probe;
  /** Also list loopback-only and IPv6-only listeners. */
  all?: boolean;
  /** How many listeners the agent client dropped from an over-long answer. */
  dropped?: number;
}

/** Most web probes in flight at once, so a guest listing many ports cannot make the daemon open hundreds of connections. */
export const PROBE_CONCURRENCY = 16;
/** Most ports probed per `vm ports`; the rest are listed without a scheme. */
export const MAX_PROBED_PORTS = 64;
/** No new probe starts after this long; the rest are listed without a scheme. */
export const PROBE_BUDGET_MS = 5000;

/** Probes each port once, at most PROBE_CONCURRENCY at a time, the first MAX_PROBED_PORTS, within PROBE_BUDGET_MS. */
async function probeAll(all: number[], opts: PortsViewOptions): Promise<Map<number, WebScheme | null>> {
  const found = new Map<number, WebScheme | null>();
  const ports = all.slice(0, MAX_PROBED_PORTS);
  const deadline = performance.now() + PROBE_BUDGET_MS;
  let next = 0;
  const worker = async () => {
    while (next < ports.length && performance.now() < deadline) {
      const port = ports[next++]!;
      found.set(port, await opts.probe(opts.probeHost, port).catch(() => null));
    }
  };
  await Promise.all(Array.from({ length: Math.min(PROBE_CONCURRENCY, ports.length) }, worker));
  return found;
}

/** True for binds every interface answers: 0.0.0.0, :: and ss's `*` (dual-stack). */
export function isWildcard(address: string): boolean {
  return address === "0.0.0.0" || address === "::" || address === "*";
}

/** True when a listener can be reached from the host as `<name>.vm`. */
export function isReachable(address: string): boolean {
  if (isWildcard(address)) return true;
  const v4 = address.replace(/^::ffff:/i, "");
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(v4)) return false;
  return !v4.startsWith("127.");
}

function literal(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * Rows before probing. Reachable listeners with the same protocol, port and process
 * collapse into one (a 0.0.0.0 and a :: bind are one endpoint to the user).
 */
export function collapseSockets(vmName: string, sockets: ListeningSocket[], all = false): PortRow[] {
  const rows = new Map<string, PortRow>();
  for (const s of sockets) {
    const reachable = isReachable(s.address);
    if (!reachable && !all) continue;
    const endpoint = reachable ? `${vmName}.vm:${s.port}` : literal(s.address, s.port);
    const key = `${s.proto} ${endpoint} ${s.pid ?? "-"}`;
    const had = rows.get(key);
    // The IPv4 wildcard is the address shown when both binds exist.
    if (had && !(s.address === "0.0.0.0" && had.address !== "0.0.0.0")) continue;
    rows.set(key, { proto: s.proto, endpoint, reachable, address: s.address, port: s.port, pid: s.pid, process: s.process, command: s.command });
  }
  return [...rows.values()].sort(
    (a, b) => a.proto.localeCompare(b.proto) || a.port - b.port || Number(b.reachable) - Number(a.reachable) || (a.pid ?? 0) - (b.pid ?? 0),
  );
}

/** Builds the `vm ports` rows: collapse, then probe reachable TCP ports (concurrently) for HTTPS/HTTP. */
export async function buildPortsView(sockets: ListeningSocket[], opts: PortsViewOptions): Promise<PortsView> {
  const rows = collapseSockets(opts.vmName, sockets, opts.all);
  const probed = await probeAll([...new Set(rows.filter((r) => r.proto === "tcp" && r.reachable).map((r) => r.port))], opts);
  for (const r of rows) {
    const scheme = r.proto === "tcp" && r.reachable ? probed.get(r.port) : null;
    if (!scheme) continue;
    r.scheme = scheme;
    r.endpoint = `${scheme}://${r.endpoint}`;
  }
  const view: PortsView = { vm: opts.vmName, ports: rows.map((r) => JSON.parse(JSON.stringify(r)) as PortRow) };
  if (opts.dropped) view.dropped = opts.dropped;
  return view;
}

/** One line of text for a command line that may hold newlines or runs of spaces. */
function oneLine(text: string | undefined, max: number): string {
  if (!text) return "-";
  const flat = printable(text).replace(/\s+/g, " ").trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/** The human table: `PROTO ENDPOINT PROCESS COMMAND`, aligned, no trailing spaces. */
export function renderPortsTable(view: PortsView, opts: { commandWidth?: number } = {}): string {
  const headers = ["PROTO", "ENDPOINT", "PROCESS", "COMMAND"];
  const more = view.dropped ? `\n(${view.dropped} more listeners not shown: the agent reported more than banger takes)` : "";
  if (!view.ports.length) return `no listening ports in ${view.vm}${more}`;
  const cells = view.ports.map((r) => [r.proto, oneLine(r.endpoint, 120), oneLine(r.process, 32), oneLine(r.command, opts.commandWidth ?? 120)]);
  const all = [headers, ...cells];
  const widths = headers.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return (
    all
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
          .join("  ")
          .trimEnd(),
      )
      .join("\n") + more
  );
}
