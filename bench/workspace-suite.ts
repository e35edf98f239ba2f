/**
 * Workspace prepare of a generated repository against plain `tar | tar` and `tar | ssh`,
 * by running bench/workspace.ts (which owns the measurement) and reading its lines.
 */
import { join } from "node:path";
import { projectRoot } from "../src/testing/skip.ts";
import { type BenchCtx, heading } from "./lib.ts";

interface Line {
  label: string;
  seconds: number;
}

/** Parses bench/workspace.ts output: "<label>   <seconds> s[  <rate> MB/s of <n> MB]". */
export function parseWorkspaceLines(out: string): Line[] {
  const lines: Line[] = [];
  for (const m of out.matchAll(/^(.+?)\s+([\d.]+) s(?:\s+\d+ MB\/s of \d+ MB)?$/gm)) lines.push({ label: m[1]!.trim(), seconds: Number(m[2]) });
  return lines;
}

/** Runs bench/workspace.ts with a repo of `mib` MiB and adds prepare-vs-baseline ratios per transport. */
export async function benchWorkspace(ctx: BenchCtx, mib: number): Promise<void> {
  heading(`workspace prepare of a ${mib} MiB repo (bench/workspace.ts)`, ctx.machine);
  const proc = Bun.spawn([process.execPath, join(projectRoot, "bench", "workspace.ts"), String(mib)], { cwd: projectRoot, stdout: "pipe", stderr: "inherit" });
  const out = await new Response(proc.stdout).text();
  const code = await proc.exited;
  for (const l of out.trimEnd().split("\n")) console.log(`   ${l}`);
  if (code !== 0) throw new Error(`bench/workspace.ts exited ${code}`);
  const lines = parseWorkspaceLines(out);
  for (const transport of ["local", "loopback ssh"]) {
    const find = (suffix: string) => lines.find((l) => l.label === `${transport}: ${suffix}`)?.seconds;
    const base = find("baseline tar -c . | tar -x");
    if (base === undefined) continue;
    const via = transport === "local" ? "tar | tar" : "tar | ssh";
    for (const [what, suffix] of [["prepare (working tree)", "prepareWorkspace (working tree)"], ["prepare --full-copy", "prepareWorkspace --full-copy"]] as const) {
      const s = find(suffix);
      if (s !== undefined) ctx.summary.add({ bench: "workspace", metric: `${transport}: ${what}, ${mib} MiB`, value: `${s.toFixed(2)} s`, baseline: `${base.toFixed(2)} s ${via}`, ratio: s / base });
    }
  }
}
