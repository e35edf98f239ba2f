/**
 * A fake-Firecracker home tuned for measuring banger itself: the compiled agent answers as
 * soon as the fake "boots", and the image claims the agent this build ships, so no start
 * pushes a new agent onto the config drive (that push is measured on its own).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestHome } from "../src/testing/cli.ts";
import { fakeFirecrackerHome } from "../src/testing/fake-env.ts";
import { defaultSpecPath } from "../src/testing/fake-firecracker/schema.ts";
import { projectRoot } from "../src/testing/skip.ts";
import { ArtifactStore } from "../src/store/artifacts.ts";
import { openStore } from "../src/store/db.ts";

/** A TestHome with its private bridge; always call teardownNet() and cleanup(). */
export type FakeHome = TestHome & { teardownNet(): Promise<void> };

const agentBin = join(projectRoot, "dist", "banger-agent");

/** The agent version this build ships (what the daemon compares an image's agent against). */
export function shippedAgentVersion(): string {
  const r = Bun.spawnSync([agentBin, "--version"]);
  if (r.exitCode !== 0) throw new Error(`${agentBin} --version failed; run bun run build`);
  return r.stdout.toString().trim();
}

/** Sets the image's recorded agent version (the daemon pushes an agent when it differs). */
export function setImageAgent(home: TestHome, version: string, image = "bookworm"): void {
  const db = openStore(home.paths.dbFile);
  try {
    const store = new ArtifactStore(db);
    const row = store.image(image);
    if (!row) throw new Error(`image ${image} is not registered in the bench home`);
    store.putImage({ ...row, agent_version: version });
  } finally {
    db.close();
  }
}

/**
 * The fake Firecracker compiled to bytecode, as the bench's VMM: the same code the tests run,
 * but starting in milliseconds like the real (native) Firecracker rather than paying for Bun
 * to load TypeScript on every VM start, which is no cost of banger's.
 */
function compiledFake(): { bin: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), "banger-bench-fc-"));
  const bin = join(dir, "firecracker");
  const r = Bun.spawnSync(["bun", "build", join(projectRoot, "src/testing/fake-firecracker.ts"), "--compile", "--bytecode", "--outfile", bin], {
    stdout: "ignore",
    stderr: "pipe",
  });
  if (r.exitCode !== 0) throw new Error(`compiling the fake Firecracker failed: ${r.stderr}`);
  return { bin, dir };
}

/** A fake-VMM home with `taps` TAPs whose agent starts from the compiled binary; `config` is appended to its config file. */
export async function benchFakeHome(taps: number, config?: string): Promise<FakeHome> {
  const fake = compiledFake();
  const home = await fakeFirecrackerHome({
    taps,
    env: { FAKE_FC_AGENT_CMD: agentBin, FAKE_FC_API_SPEC: defaultSpecPath() },
    firecrackerBin: fake.bin,
    // The shipped default stats interval, not the tests' fast one: the daemon's cost as a user runs it.
    config: `stats_poll_interval = "5s"\n${config ?? ""}`,
  });
  const cleanup = home.cleanup.bind(home);
  home.cleanup = async () => {
    await cleanup();
    rmSync(fake.dir, { recursive: true, force: true });
  };
  try {
    setImageAgent(home, shippedAgentVersion());
    const r = await home.run(["vm", "list"]); // starts the daemon, so no timing below includes that
    if (r.code !== 0) throw new Error(`vm list failed: ${r.stderr}`);
  } catch (err) {
    await home.teardownNet();
    await home.cleanup();
    throw err;
  }
  return home;
}

/** The daemon's resident set in MiB (VmRSS from /proc). */
export function daemonRssMiB(home: TestHome): number {
  const pid = home.daemonPid();
  if (!pid) throw new Error("no daemon pid file");
  const kb = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
  return kb / 1024;
}

/** Step times from `vm create`'s plain progress lines ("✓ boot 1.2s"), in ms. */
export function stepTimes(stderr: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of stderr.matchAll(/✓ (.+?) ([\d.]+)(ms|s)\s*$/gm)) out.set(m[1]!, Number(m[2]) * (m[3] === "s" ? 1000 : 1));
  return out;
}

/** Runs `vm create --name name`, throwing with its stderr when it fails; returns wall ms and steps. */
export async function createVm(home: TestHome, name: string, extra: string[] = []): Promise<{ ms: number; steps: Map<string, number> }> {
  const t = performance.now();
  const r = await home.run(["vm", "create", "--name", name, ...extra]);
  const ms = performance.now() - t;
  if (r.code !== 0) throw new Error(`vm create ${name} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return { ms, steps: stepTimes(r.stderr) };
}

/** Deletes VMs (forced, all in one call); returns wall ms. */
export async function deleteVms(home: TestHome, names: string[]): Promise<number> {
  if (!names.length) return 0;
  const t = performance.now();
  const r = await home.run(["vm", "delete", "--force", ...names]);
  if (r.code !== 0) throw new Error(`vm delete failed (exit ${r.code}): ${r.stderr.trim()}`);
  return performance.now() - t;
}
