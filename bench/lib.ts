/**
 * Shared pieces of the benchmarks: the machine's description, timing and percentiles, and
 * the summary table every suite adds its figures to.
 */
import { cpus, totalmem } from "node:os";
import { readFileSync } from "node:fs";
import { chooseAccel, hostAccelDeps } from "../src/vm/drivers/accel.ts";

/** What a figure was measured on; printed with every suite so numbers never travel alone. */
export interface Machine {
  nproc: number;
  cpu: string;
  memGiB: number;
  kernel: string;
  accel: "kvm" | "tcg";
}

/** Reads the machine's facts: nproc, CPU model, memory, kernel release, usable accelerator. */
export function machineInfo(): Machine {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? "unknown";
  const kernel = readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();
  const accel = chooseAccel("auto", { ...hostAccelDeps, warn: () => {} });
  return { nproc: navigator.hardwareConcurrency, cpu: model, memGiB: Math.round(totalmem() / 2 ** 30), kernel, accel };
}

/** CPU time (ms) the whole machine has spent busy so far, from /proc/stat (user, nice, system, irq, softirq). */
export function machineCpuMs(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]!) * (1000 / 100);
}

/** CPU time (ms) one process has used so far (utime + stime), all its threads or only thread `tid` (its main thread: tid = pid). */
export function processCpuMs(pid: number, tid?: number): number {
  const f = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, "utf8")
    .split(") ")[1]!
    .split(" ");
  return (Number(f[11]) + Number(f[12])) * (1000 / 100);
}

/** One line describing the machine. */
export function machineLine(m: Machine): string {
  return `machine: ${m.nproc} CPUs (${m.cpu}), ${m.memGiB} GiB, Linux ${m.kernel}, accel ${m.accel}`;
}

/** Prints a suite's heading with the machine it runs on. */
export function heading(title: string, m: Machine): void {
  console.log(`\n== ${title}\n   ${machineLine(m)}`);
}

/** The p-th percentile (0..100) by nearest rank; NaN for no samples. */
export function percentile(samples: number[], p: number): number {
  if (!samples.length) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Milliseconds one call takes, with its result. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t = performance.now();
  const value = await fn();
  return { ms: performance.now() - t, value };
}

/** Milliseconds as a short human figure (ms below 10 s, else s). */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return "-";
  return ms < 10_000 ? `${ms.toFixed(ms < 10 ? 1 : 0)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** One row of the final table. */
export interface Row {
  bench: string;
  metric: string;
  value: string;
  baseline?: string;
  ratio?: number;
}

/** The figures every suite reports, printed at the end as one table. */
export class Summary {
  readonly rows: Row[] = [];
  readonly failures: string[] = [];

  add(row: Row): void {
    this.rows.push(row);
    const vs = row.baseline ? `  (baseline ${row.baseline}${row.ratio !== undefined ? `, ratio ${row.ratio.toFixed(2)}x` : ""})` : "";
    console.log(`   ${row.metric}: ${row.value}${vs}`);
  }

  fail(bench: string, err: unknown): void {
    const msg = err instanceof Error ? err.message : String(err);
    this.failures.push(`${bench}: ${msg}`);
    console.log(`   FAILED: ${msg}`);
  }

  /** The table, aligned, with the machine line above it. */
  render(m: Machine): string {
    const head: Row = { bench: "bench", metric: "metric", value: "value", baseline: "baseline" };
    const cells = [head, ...this.rows].map((r, i) => [
      r.bench,
      r.metric,
      r.value,
      r.baseline ?? "",
      i === 0 ? "ratio" : r.ratio !== undefined ? `${r.ratio.toFixed(2)}x` : "",
    ]);
    const widths = cells[0]!.map((_, c) => Math.max(...cells.map((row) => row[c]!.length)));
    const line = (row: string[]) =>
      row
        .map((cell, c) => cell.padEnd(widths[c]!))
        .join("  ")
        .trimEnd();
    const out = [machineLine(m), line(cells[0]!), widths.map((w) => "-".repeat(w)).join("  "), ...cells.slice(1).map(line)];
    for (const f of this.failures) out.push(`FAILED ${f}`);
    return out.join("\n");
  }
}

/** What every suite receives. */
export interface BenchCtx {
  machine: Machine;
  summary: Summary;
  quick: boolean;
}
