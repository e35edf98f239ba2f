/**
 * Network policy cost. Per VM: applying one VM's rules (anti-spoofing, egress, NAT set) as
 * the daemon does, in one nft transaction, on a private bridge of the bench's own, against
 * the floor of running `nft -f -` with a script that changes nothing. And `vm create` to
 * ready with each policy (fake Firecracker), against `--net none` in the same home.
 */
import { hostRunner } from "../src/host/runner.ts";
import { hostSetup, hostTeardown, tapNames, type HostNetConfig } from "../src/host/network.ts";
import { executeNetRequest } from "../src/host/network/net-helper.ts";
import { nftTable } from "../src/host/network/config.ts";
import { privateNet } from "../src/testing/fake-env.ts";
import { benchFakeHome, createVm, deleteVms } from "./fake-home.ts";
import { type BenchCtx, fmtMs, heading, percentile, timed } from "./lib.ts";

const BENCH = "net policy";
const POLICIES = ["none", "nat", "allow:api.example.com,*.example.org,203.0.113.0/24:443,198.51.100.7"];

/** Runs both measurements; `runs` applies per policy. */
export async function benchNetPolicy(ctx: BenchCtx, runs: number): Promise<void> {
  heading(`network policy: per-VM rules x${runs} per policy, vm create per policy`, ctx.machine);
  await perVmSetup(ctx, runs);
  await createPerPolicy(ctx, Math.max(3, Math.floor(runs / 4)));
}

async function perVmSetup(ctx: BenchCtx, runs: number): Promise<void> {
  const { bridge, subnet } = privateNet();
  const cfg: HostNetConfig = { bridge, subnet, tapCount: 2, owner: { uid: 0, gid: 0 }, firewall: "nftables" };
  const deps = { runner: hostRunner, sudo: false };
  const prefix = subnet.split(".").slice(0, 3).join(".");
  try {
    await hostSetup(deps, cfg);
    const tap = tapNames(cfg)[0]!;
    const floor: number[] = [];
    for (let i = 0; i < runs; i++) floor.push((await timed(() => hostRunner.run(["nft", "-f", "-"], { stdin: `add table inet ${nftTable(bridge)}\n` }))).ms);
    const base = percentile(floor, 50);
    ctx.summary.add({ bench: BENCH, metric: "floor: nft -f - with a no-op script, p50", value: fmtMs(base) });
    for (const net of POLICIES) {
      const walls: number[] = [];
      for (let i = 0; i < runs; i++) {
        const ip = `${prefix}.${10 + (i % 200)}`;
        walls.push((await timed(() => executeNetRequest(deps, bridge, { op: "apply", ip, mac: "52:54:00:00:00:10", tap, net }))).ms);
        await executeNetRequest(deps, bridge, { op: "remove", ip, tap });
      }
      const p50 = percentile(walls, 50);
      ctx.summary.add({
        bench: BENCH,
        metric: `per-VM setup, ${net.split(":")[0]} (goal <= 20 ms), p50`,
        value: fmtMs(p50),
        baseline: fmtMs(base),
        ratio: p50 / base,
      });
    }
  } finally {
    await hostTeardown(deps, cfg).catch(() => []);
  }
}

async function createPerPolicy(ctx: BenchCtx, n: number): Promise<void> {
  const home = await benchFakeHome(POLICIES.length * n + 2);
  try {
    const p50s = new Map<string, number>();
    for (const net of POLICIES) {
      const walls: number[] = [];
      const names: string[] = [];
      for (let i = 0; i < n; i++) {
        const name = `${net.split(":")[0]}${i}`;
        walls.push((await createVm(home, name, ["--net", net])).ms);
        names.push(name);
      }
      await deleteVms(home, names);
      p50s.set(net, percentile(walls, 50));
    }
    const none = p50s.get("none")!;
    for (const [net, p50] of p50s) {
      ctx.summary.add({
        bench: BENCH,
        metric: `vm create -> ready, --net ${net.split(":")[0]}, p50 (n=${n})`,
        value: fmtMs(p50),
        baseline: `${fmtMs(none)} none`,
        ratio: p50 / none,
      });
    }
  } finally {
    await home.teardownNet();
    await home.cleanup();
  }
}
