/**
 * `vm exec` and `vm cp` through the guest agent against the same work over SSH, on one real
 * guest: `vm exec r -- true` vs `vm ssh r -- true` (p50), and a 200 MB directory copy in and
 * out vs `tar | vm ssh | tar`.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bangerBin } from "../src/testing/cli.ts";
import { realHome, type RealHome } from "../src/testing/real-env.ts";
import { type BenchCtx, fmtMs, heading, percentile, timed } from "./lib.ts";

async function sh(home: RealHome, cwd: string, script: string): Promise<void> {
  const proc = Bun.spawn(["bash", "-o", "pipefail", "-c", script], { env: { ...home.env, B: bangerBin }, cwd, stdout: "ignore", stderr: "pipe" });
  if ((await proc.exited) !== 0) throw new Error(`${script}: ${await new Response(proc.stderr).text()}`);
}

async function p50(runs: number, fn: () => Promise<unknown>): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) samples.push((await timed(fn)).ms);
  return percentile(samples, 50);
}

/** Boots one guest and measures exec and cp against their SSH equivalents. */
export async function benchExec(ctx: BenchCtx, mb: number, runs = 5): Promise<void> {
  heading(`vm exec / vm cp through the agent vs SSH on a real guest (${ctx.machine.accel})`, ctx.machine);
  const home = await realHome({ taps: 2 });
  const tmp = mkdtempSync(join(tmpdir(), "banger-exec-bench-"));
  try {
    const c = await home.run(["vm", "create", "--name", "xb"]);
    if (c.code !== 0) throw new Error(`vm create: ${c.stderr}`);
    const exec = await p50(runs, () => home.run(["vm", "exec", "xb", "--", "true"]));
    const ssh = await p50(runs, () => home.run(["vm", "ssh", "xb", "--", "true"]));
    ctx.summary.add({
      bench: "exec",
      metric: `vm exec xb -- true, p50 of ${runs}`,
      value: fmtMs(exec),
      baseline: `${fmtMs(ssh)} vm ssh xb -- true`,
      ratio: exec / ssh,
    });

    await sh(home, tmp, `mkdir -p src && head -c ${mb}M /dev/urandom > src/big.bin && echo small > src/a.txt && ln -s a.txt src/link`);
    const cpIn = (await timed(() => sh(home, tmp, `"$B" vm cp -r src xb:/root/`))).ms;
    const sshIn = (await timed(() => sh(home, tmp, `tar -C src -cf - . | "$B" vm ssh xb -- sh -c 'mkdir -p /root/viassh && tar -xf - -C /root/viassh'`))).ms;
    ctx.summary.add({
      bench: "exec",
      metric: `vm cp -r of ${mb} MB into the guest`,
      value: fmtMs(cpIn),
      baseline: `${fmtMs(sshIn)} tar | vm ssh | tar`,
      ratio: cpIn / sshIn,
    });
    const cpOut = (await timed(() => sh(home, tmp, `"$B" vm cp -r xb:/root/src back`))).ms;
    const sshOut = (await timed(() => sh(home, tmp, `mkdir -p viassh && "$B" vm ssh xb -- tar -C /root/src -cf - . | tar -xf - -C viassh`))).ms;
    ctx.summary.add({
      bench: "exec",
      metric: `vm cp -r of ${mb} MB out of the guest`,
      value: fmtMs(cpOut),
      baseline: `${fmtMs(sshOut)} vm ssh | tar`,
      ratio: cpOut / sshOut,
    });
  } finally {
    await home.run(["vm", "delete", "--force", "xb"]);
    await home.teardownNet();
    await home.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  }
}
