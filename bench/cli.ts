/**
 * CLI start-up cost against the floor: a compiled Bun hello-world, built once per run. Each
 * command is timed in turns with the hello-world (one run of each, then again), so both see
 * the same machine: a CPU's clock or the page cache drifting between two separate series would
 * otherwise move the ratio. `banger version` and `--help` load nothing beyond the command table;
 * heavier commands load their modules on first use.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { projectRoot } from "../src/testing/skip.ts";
import { type BenchCtx, fmtMs, heading, percentile } from "./lib.ts";

const BENCH = "cli start";
let hello: string | undefined;

/** Wall time of one run of argv, spawn to exit; throws when it fails. */
async function runOnce(argv: string[], env?: Record<string, string | undefined>): Promise<number> {
  const t = performance.now();
  const p = Bun.spawn(argv, { stdout: "ignore", stderr: "ignore", env: env ?? process.env });
  if ((await p.exited) !== 0) throw new Error(`${argv.join(" ")} exited ${p.exitCode}`);
  return performance.now() - t;
}

/** The compiled Bun hello-world (built on first use, removed when the bench exits): the floor for any Bun CLI. */
function helloWorld(): string {
  if (hello) return hello;
  const dir = mkdtempSync(join(tmpdir(), "banger-bench-hello-"));
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "hello.ts"), 'console.log("hello");\n');
  const build = Bun.spawnSync(["bun", "build", join(dir, "hello.ts"), "--compile", "--outfile", join(dir, "hello")], { stdout: "ignore", stderr: "pipe" });
  if (build.exitCode !== 0) throw new Error(`compiling the hello-world baseline failed: ${build.stderr}`);
  hello = join(dir, "hello");
  return hello;
}

/** p50 wall times of argv and of the hello-world, run in turns `runs` times each after one warm-up of each. */
export async function againstHello(argv: string[], runs = 20, env?: Record<string, string | undefined>): Promise<{ ms: number; hello: number }> {
  const [mine, base]: number[][] = [[], []];
  const floor = [helloWorld()];
  for (let i = 0; i <= runs; i++) {
    const a = await runOnce(argv, env);
    const b = await runOnce(floor);
    if (i > 0) mine.push(a), base.push(b);
  }
  return { ms: percentile(mine, 50), hello: percentile(base, 50) };
}

export async function benchCli(ctx: BenchCtx): Promise<void> {
  heading("cli start-up against a compiled Bun hello-world", ctx.machine);
  const banger = join(projectRoot, "dist", "banger");
  for (const args of [["version"], ["--help"]]) {
    const { ms, hello } = await againstHello([banger, ...args]);
    ctx.summary.add({ bench: BENCH, metric: `banger ${args.join(" ")} p50`, value: fmtMs(ms), baseline: `${fmtMs(hello)} hello-world`, ratio: ms / hello });
  }
}
