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

/** Runs bench/workspace.ts once per mode and reads its lines. */
async function runWorkspaceBench(args: string[]): Promise<Line[]> {
  const proc = Bun.spawn([process.execPath, join(projectRoot, "bench", "workspace.ts"), ...args], { cwd: projectRoot, stdout: "pipe", stderr: "inherit" });
  const out = await new Response(proc.stdout).text();
  const code = await proc.exited;
  for (const l of out.trimEnd().split("\n")) console.log(`   ${l}`);
  if (code !== 0) throw new Error(`bench/workspace.ts ${args.join(" ")} exited ${code}`);
  return parseWorkspaceLines(out);
}

const BASELINES: Record<string, string> = { local: "tar | tar", "loopback ssh": "tar | ssh", "real guest": "tar | vm ssh | tar" };

/**
 * Runs bench/workspace.ts with a repo of `mib` MiB (local shell and loopback sshd, then,
 * with `real`, a booted guest) and adds prepare-vs-baseline ratios per transport.
 */
export async function benchWorkspace(ctx: BenchCtx, mib: number, real: boolean): Promise<void> {
  heading(`workspace prepare of a ${mib} MiB repo (bench/workspace.ts)`, ctx.machine);
  const lines = await runWorkspaceBench([String(mib)]);
  if (real) lines.push(...(await runWorkspaceBench(["--real", String(mib)])));
  for (const [transport, via] of Object.entries(BASELINES)) {
    const find = (what: string) => lines.find((l) => l.label === `${transport}: ${what}`)?.seconds;
    const base = find("baseline tar -c . | tar -x");
    if (base === undefined) continue;
    for (const what of ["prepare (working tree)", "prepare --full-copy"]) {
      const s = find(what);
      if (s !== undefined)
        ctx.summary.add({
          bench: "workspace",
          metric: `${transport}: ${what}, ${mib} MiB`,
          value: `${s.toFixed(2)} s`,
          baseline: `${base.toFixed(2)} s ${via}`,
          ratio: s / base,
        });
    }
    const same = find("re-run sync, no change");
    const one = find("re-run sync, one-file change");
    const full = find("prepare (working tree)");
    if (same !== undefined && one !== undefined) {
      ctx.summary.add({
        bench: "workspace",
        metric: `${transport}: re-run sync, one-file change (goal: ≤ 0.5 s more under TCG)`,
        value: `${one.toFixed(2)} s (+${(one - same).toFixed(2)} s)`,
        baseline: `${same.toFixed(2)} s no change`,
        ratio: one / same,
      });
      if (full !== undefined)
        ctx.summary.add({
          bench: "workspace",
          metric: `${transport}: re-run sync, one-file change vs full prepare, ${mib} MiB`,
          value: `${one.toFixed(2)} s`,
          baseline: `${full.toFixed(2)} s prepare`,
          ratio: one / full,
        });
    }
    const exported = find("export (1 commit + uncommitted)");
    if (exported !== undefined)
      ctx.summary.add({ bench: "workspace", metric: `${transport}: export of 1 commit + uncommitted work`, value: `${exported.toFixed(2)} s` });
  }
}
