/**
 * `bun run bench`: every benchmark in turn, each printing its figures and the machine's,
 * then one summary table. `--quick` skips the real-guest (QEMU/TCG) parts and shrinks the
 * runs; `--only NAME[,NAME]` picks suites (boot, kernel, cli, control, disks, net, workspace, exec, instant, forkmem).
 */
import { parseArgs } from "node:util";
import { benchBoot } from "./boot.ts";
import { benchCli } from "./cli.ts";
import { benchControlPlane } from "./control-plane.ts";
import { benchDisks } from "./disks.ts";
import { benchNetPolicy } from "./net-policy.ts";
import { benchExec } from "./exec.ts";
import { benchForkMemory } from "./fork-memory.ts";
import { benchInstant } from "./instant.ts";
import { benchKernel } from "./kernel.ts";
import { benchWorkspace } from "./workspace-suite.ts";
import { type BenchCtx, machineInfo, machineLine, Summary } from "./lib.ts";

const { values } = parseArgs({
  options: { quick: { type: "boolean", default: false }, only: { type: "string" }, "boot-runs": { type: "string", default: "2" } },
  strict: true,
});
const only = values.only ? new Set(values.only.split(",")) : null;
const ctx: BenchCtx = { machine: machineInfo(), summary: new Summary(), quick: values.quick };
console.log(machineLine(ctx.machine));

const suites: Array<[string, () => Promise<void>]> = [
  ["boot", async () => (ctx.quick ? console.log("\n== boot: skipped (--quick)") : benchBoot(ctx, Number(values["boot-runs"])))],
  ["kernel", async () => (ctx.quick ? console.log("\n== kernel: skipped (--quick)") : benchKernel(ctx, Number(values["boot-runs"])))],
  ["cli", () => benchCli(ctx)],
  ["control", () => benchControlPlane(ctx, ctx.quick ? { creates: 20, listRuns: 10, parallel: 10 } : { creates: 50, listRuns: 20, parallel: 20 })],
  ["disks", () => benchDisks(ctx)],
  ["net", () => benchNetPolicy(ctx, ctx.quick ? 12 : 40)],
  ["workspace", () => benchWorkspace(ctx, ctx.quick ? 50 : 200, !ctx.quick)],
  ["exec", async () => (ctx.quick ? console.log("\n== exec: skipped (--quick)") : benchExec(ctx, 200))],
  ["instant", () => benchInstant(ctx)],
  ["forkmem", async () => (ctx.quick ? console.log("\n== forkmem: skipped (--quick)") : benchForkMemory(ctx, 5))],
];

for (const [name, run] of suites) {
  if (only && !only.has(name)) continue;
  try {
    await run();
  } catch (err) {
    ctx.summary.fail(name, err);
  }
}
console.log(`\n== summary\n${ctx.summary.render(ctx.machine)}`);
process.exit(ctx.summary.failures.length ? 1 : 0);
