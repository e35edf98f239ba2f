import type { FanoutResult } from "../vm/refs.ts";
import type { VmView } from "../vm/model.ts";
import type { VmStats } from "../vm/reconcile.ts";
import { printable } from "../printable.ts";
import { formatSize } from "../units.ts";
import { table, type Out } from "./render.ts";

function age(iso: string | null): string {
  if (!iso) return "-";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m` : s < 86400 ? `${Math.floor(s / 3600)}h` : `${Math.floor(s / 86400)}d`;
}

export function renderVmList(out: Out, vms: VmView[]) {
  if (!vms.length) return out.out("no VMs yet; create one with `banger vm create` or `banger vm run`");
  out.out(
    table(
      ["NAME", "STATE", "IP", "CPUS", "MEMORY", "DISK", "NET", "VMM", "IMAGE", "CREATED"],
      vms.map((v) => [v.name, v.state, v.ip, v.cpus, `${v.memory_mib}M`, formatSize(v.disk_bytes), shortNet(v.net), v.vmm, v.image, age(v.created_at)]),
    ),
  );
}

export function renderVm(out: Out, v: VmView) {
  const rows: Array<[string, string | number]> = [
    ["name", `${v.name} (${v.dns})`],
    ["id", v.id],
    ["state", v.state + (v.last_error ? ` (last error: ${v.last_error})` : "")],
    ["image", v.image],
    ["kernel", v.kernel],
    ["vmm", v.vmm + (v.pid ? `, pid ${v.pid}` : "")],
    ["cpus", v.cpus],
    ["memory", `${v.memory_mib} MiB`],
    ["disk", formatSize(v.disk_bytes)],
    ["network", `${v.ip} on ${v.tap}, mac ${v.mac}`],
    ["net", `${v.net}${v.group ? `, group ${v.group}` : ""}`],
    ["vsock cid", v.cid],
    ["dir", v.dir],
    ["created", v.created_at],
    ["started", v.started_at ?? "-"],
  ];
  out.out(rows.map(([k, val]) => `${k.padEnd(10)} ${val}`).join("\n"));
}

/** One line per ref in first-seen order; returns the exit code (1 if any failed). */
export function renderFanout(out: Out, results: FanoutResult[]): number {
  for (const r of results) {
    if (r.ok) out.out(`${r.name}: ${printable(r.message)}`);
    else out.err(`${printable(r.ref)}: ${printable(r.message)}${r.error?.hint ? `\n  hint: ${printable(r.error.hint)}` : ""}`);
  }
  return results.every((r) => r.ok) ? 0 : 1;
}

export function renderStats(out: Out, stats: VmStats[]) {
  out.out(
    table(
      ["NAME", "STATE", "CPU", "RSS", "DISK USED", "DISK", "UPTIME"],
      stats.map((s) => [
        s.name,
        s.state,
        s.cpu_percent === null ? "-" : `${s.cpu_percent}%`,
        s.rss_bytes === null ? "-" : formatSize(s.rss_bytes),
        s.disk_used_bytes === null ? "-" : formatSize(s.disk_used_bytes),
        formatSize(s.disk_bytes),
        s.uptime_s === null ? "-" : `${s.uptime_s}s`,
      ]),
    ),
  );
}

/** The policy as a list column shows it: allow rules are summarised by count. */
function shortNet(net: string): string {
  return net.startsWith("allow:") ? `allow(${net.slice(6).split(",").length})` : net;
}
