/**
 * Control-plane cost with the fake Firecracker (no guest to wait for): create-to-ready
 * p50/p95, `vm list` with many VMs, parallel creates against one, the agent push, and the
 * daemon's RSS idle and loaded.
 */
import { benchFakeHome, createVm, daemonRssMiB, deleteVms, setImageAgent, shippedAgentVersion, type FakeHome } from "./fake-home.ts";
import { bangerBin } from "../src/testing/cli.ts";
import { againstHello } from "./cli.ts";
import { type BenchCtx, fmtMs, heading, machineCpuMs, percentile, processCpuMs, timed } from "./lib.ts";

/** Sizes of the control-plane runs. */
export interface ControlPlaneOptions {
  creates: number;
  listRuns: number;
  parallel: number;
}

const BENCH = "control plane";

/** Runs every control-plane measurement in one fake home (its daemon lives across them). */
export async function benchControlPlane(ctx: BenchCtx, opts: ControlPlaneOptions): Promise<void> {
  heading(`control plane (fake Firecracker): ${opts.creates} creates, ${opts.parallel} in parallel, vm list x${opts.listRuns}`, ctx.machine);
  const home = await benchFakeHome(Math.max(opts.creates, opts.parallel + 1) + 4);
  try {
    await Bun.sleep(500); // let the fresh daemon settle before its idle RSS is read
    const idleRss = daemonRssMiB(home);
    ctx.summary.add({ bench: "daemon RSS", metric: "idle", value: `${idleRss.toFixed(0)} MiB` });
    await parallelCreates(ctx, home, opts.parallel);
    await agentPush(ctx, home);
    const names = await sequentialCreates(ctx, home, opts.creates);
    await listRuns(ctx, home, opts.listRuns, names.length);
    const rss = daemonRssMiB(home);
    ctx.summary.add({
      bench: "daemon RSS",
      metric: `with ${names.length} VMs`,
      value: `${rss.toFixed(0)} MiB`,
      baseline: `${idleRss.toFixed(0)} MiB idle`,
      ratio: rss / idleRss,
    });
    const del = await deleteVms(home, names);
    ctx.summary.add({ bench: BENCH, metric: `vm delete --force of ${names.length} VMs (one call)`, value: fmtMs(del) });
  } finally {
    await home.teardownNet();
    await home.cleanup();
  }
}

async function sequentialCreates(ctx: BenchCtx, home: FakeHome, n: number): Promise<string[]> {
  const walls: number[] = [];
  const steps = new Map<string, number[]>();
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const name = `seq${i}`;
    const r = await createVm(home, name);
    names.push(name);
    walls.push(r.ms);
    for (const [step, ms] of r.steps) steps.set(step, [...(steps.get(step) ?? []), ms]);
  }
  ctx.summary.add({ bench: BENCH, metric: `vm create -> ready p50 (n=${n})`, value: fmtMs(percentile(walls, 50)) });
  ctx.summary.add({ bench: BENCH, metric: `vm create -> ready p95 (n=${n})`, value: fmtMs(percentile(walls, 95)) });
  const parts = [...steps].map(([step, xs]) => `${step} ${fmtMs(percentile(xs, 50))}`);
  console.log(`   daemon step p50s: ${parts.join(", ")}`);
  return names;
}

async function listRuns(ctx: BenchCtx, home: FakeHome, runs: number, vms: number): Promise<void> {
  const { ms, hello } = await againstHello([bangerBin, "vm", "list"], runs, home.env);
  ctx.summary.add({
    bench: BENCH,
    metric: `vm list with ${vms} VMs, warm daemon, p50 (n=${runs})`,
    value: fmtMs(ms),
    baseline: `${fmtMs(hello)} compiled Bun hello-world`,
    ratio: ms / hello,
  });
}

/** One round of parallel creates: its wall time, and per create the CPU of all processes and of the daemon's main thread. */
type Round = { wall: number; cpu: number; daemon: number; slowest: number };

/** Rounds of each measurement below: single samples swing by a third on a busy 2-core machine. */
const PARALLEL_ROUNDS = 3;
const SINGLE_ROUNDS = 5;

/**
 * One create alone (p50 of a few), then `parallel` at once (p50 of a few rounds): how well the
 * daemon overlaps independent VMs. Beside the wall-clock ratio it prints what bounds it: the CPU
 * every process spent per create (the CLI, the daemon, the VMM, the agent, cp/mkfs/nft), so the
 * floor on this machine's cores, and the daemon's own CPU per create, which bounds the ratio on
 * any number of cores (one JS thread).
 */
async function parallelCreates(ctx: BenchCtx, home: FakeHome, parallel: number): Promise<void> {
  await createVm(home, "warm"); // first create pays one-off costs (SSH key, caches)
  const singles: number[] = [];
  for (let i = 0; i < SINGLE_ROUNDS; i++) singles.push((await createVm(home, `one${i}`)).ms);
  await deleteVms(home, ["warm", ...singles.map((_, i) => `one${i}`)]);
  const one = percentile(singles, 50);
  const daemon = home.daemonPid()!;
  const rounds: Round[] = [];
  for (let r = 0; r < PARALLEL_ROUNDS; r++) {
    const names = Array.from({ length: parallel }, (_, i) => `par${i}`);
    const [cpu0, daemon0] = [machineCpuMs(), processCpuMs(daemon, daemon)];
    const all = await timed(() => Promise.all(names.map((n) => createVm(home, n))));
    const [cpu, daemonCpu] = [machineCpuMs() - cpu0, processCpuMs(daemon, daemon) - daemon0];
    rounds.push({ wall: all.ms, cpu: cpu / parallel, daemon: daemonCpu / parallel, slowest: Math.max(...all.value.map((x) => x.ms)) });
    await deleteVms(home, names);
  }
  const p50 = (k: keyof Round) => {
    const xs = rounds.map((x) => x[k]);
    return percentile(xs, 50);
  };
  const [wall, cpuPer, daemonPer] = [p50("wall"), p50("cpu"), p50("daemon")];
  const baseline = `${fmtMs(one)} one create, p50 of ${SINGLE_ROUNDS}`;
  ctx.summary.add({
    bench: BENCH,
    metric: `${parallel} parallel creates, wall, p50 of ${PARALLEL_ROUNDS} rounds`,
    value: fmtMs(wall),
    baseline,
    ratio: wall / one,
  });
  const floor = (parallel * cpuPer) / ctx.machine.nproc;
  ctx.summary.add({
    bench: BENCH,
    metric: `${parallel} parallel creates, CPU floor on ${ctx.machine.nproc} cores (${fmtMs(cpuPer)} CPU per create, all processes)`,
    value: fmtMs(floor),
    baseline,
    ratio: floor / one,
  });
  ctx.summary.add({
    bench: BENCH,
    metric: `${parallel} parallel creates, daemon-thread floor on any cores (${fmtMs(daemonPer)} CPU of its main thread per create)`,
    value: fmtMs(parallel * daemonPer),
    baseline,
    ratio: (parallel * daemonPer) / one,
  });
  console.log(`   rounds (wall): ${rounds.map((x) => fmtMs(x.wall)).join(", ")}; singles: ${singles.map(fmtMs).join(", ")}`);
  console.log(`   slowest of the ${parallel}: ${fmtMs(p50("slowest"))}; per VM: ${fmtMs(wall / parallel)}`);
}

/** A create whose image records another agent: the start copies the agent onto the config drive. */
async function agentPush(ctx: BenchCtx, home: FakeHome): Promise<void> {
  setImageAgent(home, "stale-agent");
  try {
    const pushed = await createVm(home, "push");
    const boot = pushed.steps.get("boot") ?? Number.NaN;
    setImageAgent(home, shippedAgentVersion());
    const plain = await createVm(home, "nopush");
    const plainBoot = plain.steps.get("boot") ?? Number.NaN;
    ctx.summary.add({
      bench: BENCH,
      metric: "boot step when the image's agent is stale (agent push)",
      value: fmtMs(boot),
      baseline: `${fmtMs(plainBoot)} agent current`,
      ratio: boot / plainBoot,
    });
    await deleteVms(home, ["push", "nopush"]);
  } finally {
    setImageAgent(home, shippedAgentVersion());
  }
}
