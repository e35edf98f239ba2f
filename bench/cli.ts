/**
 * CLI start-up cost against the floor: a compiled Bun hello-world, built and timed in the same
 * run. `banger version` and `--help` load nothing beyond the command table; heavier commands load
 * their modules on first use.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { projectRoot } from "../src/testing/skip.ts";
import { type BenchCtx, fmtMs, heading, percentile } from "./lib.ts";

const BENCH = "cli start";
let hello: Promise<number> | undefined;

/** p50 wall time of running argv `runs` times (spawn to exit), after one warm-up run. */
export async function p50Run(argv: string[], runs = 20, env?: Record<string, string | undefined>): Promise<number> {
  const walls: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const t = performance.now();
    const p = Bun.spawn(argv, { stdout: "ignore", stderr: "ignore", env: env ?? process.env });
    if ((await p.exited) !== 0) throw new Error(`${argv.join(" ")} exited ${p.exitCode}`);
    if (i > 0) walls.push(performance.now() - t);
  }
  return percentile(walls, 50);
}

/** p50 of a compiled Bun hello-world (built once per bench run): the floor for any Bun CLI. */
export function helloWorldMs(): Promise<number> {
  hello ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), "banger-bench-hello-"));
    try {
      writeFileSync(join(dir, "hello.ts"), 'console.log("hello");\n');
      const build = Bun.spawnSync(["bun", "build", join(dir, "hello.ts"), "--compile", "--outfile", join(dir, "hello")], { stdout: "ignore", stderr: "pipe" });
      if (build.exitCode !== 0) throw new Error(`compiling the hello-world baseline failed: ${build.stderr}`);
      return await p50Run([join(dir, "hello")]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  })();
  return hello;
}

export async function benchCli(ctx: BenchCtx): Promise<void> {
  heading("cli start-up against a compiled Bun hello-world", ctx.machine);
  const base = await helloWorldMs();
  const banger = join(projectRoot, "dist", "banger");
  for (const args of [["version"], ["--help"]]) {
    const ms = await p50Run([banger, ...args]);
    ctx.summary.add({ bench: BENCH, metric: `banger ${args.join(" ")} p50`, value: fmtMs(ms), baseline: `${fmtMs(base)} hello-world`, ratio: ms / base });
  }
}
