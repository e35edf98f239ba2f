/**
 * Resident memory of forks against cold VMs, under QEMU (real guests): one source VM forked into
 * `n` copies, then `n` VMs booted cold with the same settings. Each side is the sum over its QEMU
 * processes of PSS (proportional set size, /proc/<pid>/smaps_rollup: a page shared by k processes
 * counts 1/k to each), which is what the copies sharing the source's frozen RAM file save;
 * RSS (counting shared pages once per process) is printed beside it.
 */
import { readFileSync } from "node:fs";
import type { TestHome } from "../src/testing/cli.ts";
import { realHome } from "../src/testing/real-env.ts";
import { createVm, deleteVms } from "./fake-home.ts";
import { type BenchCtx, fmtMs, heading, timed } from "./lib.ts";

/** Pss and Rss of one process in KiB, from smaps_rollup. */
export function memoryOf(pid: number): { pss: number; rss: number } {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? Number.NaN);
  return { pss: field("Pss"), rss: field("Rss") };
}

async function pidOf(home: TestHome, name: string): Promise<number> {
  const r = await home.run(["vm", "show", name, "--json"]);
  const pid = (JSON.parse(r.stdout) as { pid: number | null }).pid;
  if (!pid) throw new Error(`VM ${name} has no VMM process`);
  return pid;
}

/** Summed PSS and RSS in MiB over the named VMs' VMM processes. */
async function summed(home: TestHome, names: string[]): Promise<{ pss: number; rss: number }> {
  let pss = 0;
  let rss = 0;
  for (const n of names) {
    const m = memoryOf(await pidOf(home, n));
    pss += m.pss / 1024;
    rss += m.rss / 1024;
  }
  return { pss, rss };
}

async function run(home: TestHome, args: string[]): Promise<void> {
  const r = await home.run(args);
  if (r.code !== 0) throw new Error(`banger ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
}

/** `n` forks of one running VM against `n` cold VMs: summed PSS (and RSS) of their QEMU processes. */
export async function benchForkMemory(ctx: BenchCtx, n = 5): Promise<void> {
  heading(`fork memory, real guests under QEMU (${ctx.machine.accel}): ${n} forks vs ${n} cold VMs, summed PSS of the QEMU processes`, ctx.machine);
  const home = await realHome({ taps: 2 * n + 2, config: `boot_timeout = "600s"\n` });
  const forks = Array.from({ length: n }, (_, i) => `fm-f${i + 1}`);
  const colds = Array.from({ length: n }, (_, i) => `fmc${i}`);
  try {
    await createVm(home, "fm");
    const forked = await timed(() => run(home, ["vm", "fork", "fm", "--count", String(n)]));
    await Bun.sleep(5000); // let the copies settle after their re-identify
    const f = await summed(home, forks);
    const source = await summed(home, ["fm"]);
    console.log(`   fork --count ${n} ${fmtMs(forked.ms)}; source PSS ${source.pss.toFixed(0)} MiB, RSS ${source.rss.toFixed(0)} MiB`);
    console.log(`   ${n} forks: PSS ${f.pss.toFixed(0)} MiB, RSS ${f.rss.toFixed(0)} MiB`);
    await deleteVms(home, forks);
    for (const c of colds) await createVm(home, c);
    await Bun.sleep(5000);
    const c = await summed(home, colds);
    console.log(`   ${n} cold: PSS ${c.pss.toFixed(0)} MiB, RSS ${c.rss.toFixed(0)} MiB`);
    ctx.summary.add({
      bench: `fork memory (qemu ${ctx.machine.accel})`,
      metric: `${n} forks, summed PSS of their QEMU processes`,
      value: `${f.pss.toFixed(0)} MiB`,
      baseline: `${c.pss.toFixed(0)} MiB for ${n} cold VMs`,
      ratio: f.pss / c.pss,
    });
    ctx.summary.add({
      bench: `fork memory (qemu ${ctx.machine.accel})`,
      metric: `${n} forks, summed RSS (shared pages once per process)`,
      value: `${f.rss.toFixed(0)} MiB`,
      baseline: `${c.rss.toFixed(0)} MiB for ${n} cold VMs`,
      ratio: f.rss / c.rss,
    });
  } catch (err) {
    // The home goes with the cleanup below; keep what the daemon said for the report.
    const logs = await home.run(["daemon", "logs"]);
    console.log(`   daemon log (tail):\n${logs.stdout.split("\n").slice(-30).join("\n")}${logs.stderr}`);
    throw err;
  } finally {
    await home.run(["vm", "delete", "--force", "fm", ...forks, ...colds]);
    await home.teardownNet();
    await home.cleanup();
  }
}
