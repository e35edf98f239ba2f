/**
 * Instant VMs: resume from suspend against a cold boot of the same VM in the same run, for a
 * real guest under QEMU (TCG here) and for the fake Firecracker (which measures banger's own
 * overhead around a snapshot load, the VMM itself costing nothing).
 */
import { realHome } from "../src/testing/real-env.ts";
import type { TestHome } from "../src/testing/cli.ts";
import { benchFakeHome, createVm, deleteVms } from "./fake-home.ts";
import { type BenchCtx, fmtMs, heading, percentile, timed } from "./lib.ts";

async function run(home: TestHome, args: string[]): Promise<void> {
  const r = await home.run(args);
  if (r.code !== 0) throw new Error(`banger ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
}

/** Suspend/resume cycles of one VM; returns the samples in ms. */
async function cycles(home: TestHome, name: string, n: number): Promise<{ suspend: number[]; resume: number[]; pause: number[]; unpause: number[] }> {
  const out = { suspend: [] as number[], resume: [] as number[], pause: [] as number[], unpause: [] as number[] };
  for (let i = 0; i < n; i++) {
    out.pause.push((await timed(() => run(home, ["vm", "pause", name]))).ms);
    out.unpause.push((await timed(() => run(home, ["vm", "resume", name]))).ms);
    out.suspend.push((await timed(() => run(home, ["vm", "suspend", name]))).ms);
    out.resume.push((await timed(() => run(home, ["vm", "resume", name]))).ms);
  }
  return out;
}

function report(ctx: BenchCtx, bench: string, cold: number, c: Awaited<ReturnType<typeof cycles>>, n: number) {
  const p50 = (xs: number[]) => percentile(xs, 50);
  ctx.summary.add({
    bench,
    metric: `vm resume (suspended) -> ready, p50 of ${n}`,
    value: fmtMs(p50(c.resume)),
    baseline: `${fmtMs(cold)} vm create -> ready`,
    ratio: p50(c.resume) / cold,
  });
  ctx.summary.add({
    bench,
    metric: `vm suspend, p50 of ${n}`,
    value: fmtMs(p50(c.suspend)),
    baseline: `${fmtMs(cold)} vm create -> ready`,
    ratio: p50(c.suspend) / cold,
  });
  ctx.summary.add({ bench, metric: `vm pause + resume, p50 of ${n}`, value: `${fmtMs(p50(c.pause))} + ${fmtMs(p50(c.unpause))}` });
}

/** Waits until the golden of a cold create is kept (made in the background). */
async function goldenKept(home: TestHome, timeoutMs = 180_000): Promise<number> {
  const t = performance.now();
  while (performance.now() - t < timeoutMs) {
    const r = await home.run(["cache", "list", "--json"]);
    if (r.code === 0 && (JSON.parse(r.stdout) as unknown[]).length > 0) return performance.now() - t;
    await Bun.sleep(250);
  }
  throw new Error("no warm-start golden was kept after the cold create (see banger daemon logs)");
}

/** Warm create and warm `vm run -- true` against the cold create of the same settings. */
async function warmRuns(ctx: BenchCtx, home: TestHome, coldMs: number) {
  const bench = `warm start (qemu ${ctx.machine.accel})`;
  const warm = await createVm(home, "inst1");
  const runTrue = await timed(() => run(home, ["vm", "run", "--name", "inst2", "--no-workspace", "--", "true"]));
  const steps = [...warm.steps].map(([k, v]) => `${k} ${fmtMs(v)}`).join(", ");
  console.log(`   warm create ${fmtMs(warm.ms)} (${steps}); warm vm run -- true ${fmtMs(runTrue.ms)}`);
  ctx.summary.add({
    bench,
    metric: "warm vm create -> ready",
    value: fmtMs(warm.ms),
    baseline: `${fmtMs(coldMs)} cold vm create -> ready`,
    ratio: warm.ms / coldMs,
  });
  const golden = JSON.parse((await home.run(["cache", "list", "--json"])).stdout) as Array<{ diskBytes: number }>;
  const grown = await createVm(home, "inst3", ["--disk", String(golden[0]!.diskBytes + 2 ** 30)]);
  if (!grown.steps.has("grow disk")) throw new Error("a warm create with a larger --disk did not grow its disk online (no grow disk step)");
  console.log(`   warm create with a 1 GiB larger disk ${fmtMs(grown.ms)} (${[...grown.steps].map(([k, v]) => `${k} ${fmtMs(v)}`).join(", ")})`);
  ctx.summary.add({
    bench,
    metric: "warm vm create, --disk 1 GiB over the golden's (grown online) -> ready",
    value: fmtMs(grown.ms),
    baseline: `${fmtMs(warm.ms)} warm vm create of the golden's size`,
    ratio: grown.ms / warm.ms,
  });
  ctx.summary.add({
    bench,
    metric: "warm vm run -- true (create + command)",
    value: fmtMs(runTrue.ms),
    baseline: `${fmtMs(coldMs)} cold vm create -> ready`,
    ratio: runTrue.ms / coldMs,
  });
}

/** Real guest: one cold create, suspend/resume cycles of it, then warm creates from its golden. */
async function benchReal(ctx: BenchCtx, n: number) {
  heading(`instant, real guest under QEMU (${ctx.machine.accel}): resume from suspend and warm start vs cold create`, ctx.machine);
  const home = await realHome({ taps: 4, config: `boot_timeout = "300s"\nwarm_cache = 1\n` });
  try {
    const cold = await createVm(home, "inst0");
    console.log(`   golden kept ${fmtMs(await goldenKept(home))} after the cold create answered`);
    const c = await cycles(home, "inst0", n);
    console.log(`   cold create ${fmtMs(cold.ms)}; resume ${c.resume.map(fmtMs).join(", ")}; suspend ${c.suspend.map(fmtMs).join(", ")}`);
    report(ctx, `instant (qemu ${ctx.machine.accel})`, cold.ms, c, n);
    await warmRuns(ctx, home, cold.ms);
  } finally {
    await home.run(["vm", "delete", "--force", "inst0", "inst1", "inst2", "inst3"]);
    await home.run(["cache", "prune", "--all"]);
    await home.teardownNet();
    await home.cleanup();
  }
}

/** Fake Firecracker: cold creates, then suspend/resume cycles. */
async function benchFake(ctx: BenchCtx, n: number) {
  heading("instant, fake Firecracker: resume from suspend vs cold create (banger's own overhead)", ctx.machine);
  const home = await benchFakeHome(4);
  const names = ["finst0", "finst1", "finst2"];
  try {
    const colds: number[] = [];
    for (const name of names) colds.push((await createVm(home, name)).ms);
    const c = await cycles(home, "finst0", n);
    report(ctx, "instant (fake firecracker)", percentile(colds, 50), c, n);
  } finally {
    await deleteVms(home, names).catch(() => 0);
    await home.teardownNet();
    await home.cleanup();
  }
}

/** Step p50s over several creates' progress lines, as "step 12 ms, ...". */
function stepP50s(runs: Array<{ steps: Map<string, number> }>): string {
  const by = new Map<string, number[]>();
  for (const r of runs) for (const [k, v] of r.steps) by.set(k, [...(by.get(k) ?? []), v]);
  return [...by].map(([k, xs]) => `${k} ${fmtMs(percentile(xs, 50))}`).join(", ");
}

/** Fake Firecracker: warm creates (restore + re-identify of the golden) against cold creates of the same settings. */
async function benchFakeWarm(ctx: BenchCtx, n: number) {
  heading(`warm start, fake Firecracker: ${n} warm creates vs ${n} cold creates (banger's own overhead)`, ctx.machine);
  const home = await benchFakeHome(2 * n + 3, "warm_cache = 1\n");
  const names: string[] = [];
  const create = async (name: string, extra: string[] = []) => (names.push(name), createVm(home, name, extra));
  try {
    await create("fwg");
    console.log(`   golden kept ${fmtMs(await goldenKept(home, 30_000))} after the first cold create answered`);
    const cold: Awaited<ReturnType<typeof createVm>>[] = [];
    const warm: Awaited<ReturnType<typeof createVm>>[] = [];
    // Interleaved, so both see the same machine load.
    for (let i = 0; i < n; i++) {
      cold.push(await create(`fwc${i}`, ["--cold"]));
      warm.push(await create(`fww${i}`));
    }
    if (!warm.every((w) => w.steps.has("reidentify"))) throw new Error("a create expected to be warm booted cold (no reidentify step)");
    console.log(`   cold step p50s: ${stepP50s(cold)}`);
    console.log(`   warm step p50s: ${stepP50s(warm)}`);
    const coldP50 = percentile(
      cold.map((c) => c.ms),
      50,
    );
    for (const q of [50, 95]) {
      const v = percentile(
        warm.map((w) => w.ms),
        q,
      );
      ctx.summary.add({
        bench: "warm start (fake firecracker)",
        metric: `warm vm create -> ready p${q} (n=${n}; goal p50 <= 150 ms)`,
        value: fmtMs(v),
        baseline: `${fmtMs(coldP50)} cold vm create -> ready p50`,
        ratio: v / coldP50,
      });
    }
  } finally {
    await deleteVms(home, names).catch(() => 0);
    await home.run(["cache", "prune", "--all"]);
    await home.teardownNet();
    await home.cleanup();
  }
}

export async function benchInstant(ctx: BenchCtx): Promise<void> {
  await benchFake(ctx, ctx.quick ? 5 : 10);
  await benchFakeWarm(ctx, ctx.quick ? 5 : 10);
  if (ctx.quick) console.log("\n== instant, real guest: skipped (--quick)");
  else await benchReal(ctx, 3);
}
