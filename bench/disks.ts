/**
 * Work disk creation at 1 GiB and 64 GiB from the same seed: banger promises constant time
 * (sparse copy + resize2fs with lazy init), so the ratio should stay near 1.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostRunner } from "../src/host/runner.ts";
import { allocatedBytes, createWorkDisk, makeWorkSeed } from "../src/images/disks.ts";
import { type BenchCtx, fmtMs, heading, percentile, timed } from "./lib.ts";

const GiB = 2 ** 30;

/** Median create time of a work disk of `sizeBytes` over `runs` fresh disks; also its host footprint. */
async function diskCreate(seed: string, dir: string, sizeBytes: number, runs: number): Promise<{ p50: number; allocatedMiB: number }> {
  const walls: number[] = [];
  let allocated = 0;
  for (let i = 0; i < runs; i++) {
    const path = join(dir, `work-${sizeBytes}-${i}.ext4`);
    walls.push((await timed(() => createWorkDisk({ seed, path, sizeBytes }, { runner: hostRunner }))).ms);
    allocated = await allocatedBytes(path);
    rmSync(path, { force: true });
  }
  return { p50: percentile(walls, 50), allocatedMiB: allocated / 2 ** 20 };
}

/** Work disk 1 GiB vs 64 GiB (and 1 TiB for the curious) from a 64 MiB seed holding a small /root. */
export async function benchDisks(ctx: BenchCtx): Promise<void> {
  const runs = ctx.quick ? 3 : 7;
  heading(`work disk create from a seed (createWorkDisk, p50 of ${runs})`, ctx.machine);
  const dir = mkdtempSync(join(tmpdir(), "banger-disk-bench-"));
  try {
    const src = join(dir, "root");
    mkdirSync(join(src, ".ssh"), { recursive: true });
    writeFileSync(join(src, ".bashrc"), "# bench\n");
    const seed = join(dir, "seed.ext4");
    await makeWorkSeed({ srcDir: src, path: seed }, { runner: hostRunner });
    const small = await diskCreate(seed, dir, 1 * GiB, runs);
    const large = await diskCreate(seed, dir, 64 * GiB, runs);
    const huge = await diskCreate(seed, dir, 1024 * GiB, runs);
    ctx.summary.add({
      bench: "work disk",
      metric: "create 64 GiB",
      value: fmtMs(large.p50),
      baseline: `${fmtMs(small.p50)} at 1 GiB`,
      ratio: large.p50 / small.p50,
    });
    ctx.summary.add({
      bench: "work disk",
      metric: "create 1 TiB",
      value: fmtMs(huge.p50),
      baseline: `${fmtMs(small.p50)} at 1 GiB`,
      ratio: huge.p50 / small.p50,
    });
    console.log(
      `   host blocks used: 1 GiB -> ${small.allocatedMiB.toFixed(1)} MiB, ` +
        `64 GiB -> ${large.allocatedMiB.toFixed(1)} MiB, 1 TiB -> ${huge.allocatedMiB.toFixed(1)} MiB`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
