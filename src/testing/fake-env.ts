import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { hostRunner } from "../host/runner.ts";
import { openStore } from "../store/db.ts";
import { ArtifactStore } from "../store/artifacts.ts";
import { TestHome, warmOff } from "./cli.ts";
import { projectRoot } from "./skip.ts";

/** A private bridge name and 172.16/12 subnet so parallel test files never collide. */
export function privateNet(): { bridge: string; subnet: string } {
  const n = Math.floor(Math.random() * 250) + 2;
  const m = Math.floor(Math.random() * 15) + 16;
  return { bridge: `bgt${Math.random().toString(36).slice(2, 6)}`, subnet: `172.${m}.${n}.1/24` };
}

/**
 * A TestHome whose banger uses the fake Firecracker, a private bridge with a TAP pool made by
 * the real `host setup`, and a tiny image (real ext4 files) registered in the store.
 */
export async function fakeFirecrackerHome(
  opts: { taps?: number; env?: Record<string, string>; config?: string; firecrackerBin?: string } = {},
): Promise<TestHome & { teardownNet(): Promise<void> }> {
  const { bridge, subnet } = privateNet();
  const home = new TestHome({ BANGER_SKIP_SSH_WAIT: "1", ...opts.env }) as TestHome & { teardownNet(): Promise<void> };
  const wrapper = join(home.root, "firecracker");
  const fake = opts.firecrackerBin ?? `${process.execPath} ${join(projectRoot, "src/testing/fake-firecracker.ts")}`;
  writeFileSync(wrapper, `#!/bin/sh\nexec ${fake} "$@"\n`);
  chmodSync(wrapper, 0o755);
  mkdirSync(join(home.env.XDG_CONFIG_HOME!, "banger"), { recursive: true });
  writeFileSync(
    home.paths.configFile,
    `vmm = "firecracker"\nfirecracker_bin = "${wrapper}"\nbridge = "${bridge}"\nsubnet = "${subnet}"\ntap_pool = ${opts.taps ?? 8}\n` +
      `dns_listen = "127.0.0.1:0"\nstop_grace = "2s"\n${pollFast(opts.config)}${warmOff(opts.config)}${opts.config ?? ""}`,
  );
  home.teardownNet = async () => {
    await home.run(["host", "teardown"]);
  };
  try {
    const setup = await home.run(["host", "setup"]);
    if (setup.code !== 0) throw new Error(`host setup failed: ${setup.stderr}`);
    await seedTinyImage(home);
  } catch (err) {
    await home.teardownNet();
    await home.cleanup();
    throw err;
  }
  return home;
}

/** Tests poll VM stats every 500 ms (to see a dead VMM soon) unless their config sets the interval. */
function pollFast(config = ""): string {
  return /^stats_poll_interval\s*=/m.test(config) ? "" : 'stats_poll_interval = "500ms"\n';
}

/** Registers a kernel and an image made of small real ext4 files (the fake VMM only opens them). */
export async function seedTinyImage(home: TestHome, name = "bookworm") {
  const dir = join(home.paths.stateDir, "images", name);
  mkdirSync(dir, { recursive: true });
  const rootfs = join(dir, "rootfs.ext4");
  const seed = join(dir, "work-seed.ext4");
  for (const f of [rootfs, seed]) {
    await hostRunner.run(["truncate", "-s", "64M", f]);
    await hostRunner.run(["mkfs.ext4", "-q", "-F", f]);
  }
  const kernel = join(dir, "vmlinux");
  writeFileSync(kernel, "\x7fELF fake kernel for the fake VMM\n");
  const db = openStore(home.paths.dbFile);
  const store = new ArtifactStore(db);
  const now = new Date().toISOString();
  store.putKernel({ name: "default", version: "0.0.0-test", path: kernel, sha256: "0".repeat(64), size_bytes: 1, source: "test", created_at: now });
  store.putImage({
    name,
    rootfs_path: rootfs,
    work_seed_path: seed,
    kernel: "default",
    agent_version: "test",
    fingerprint: "test",
    size_bytes: 64 << 20,
    source: "test",
    created_at: now,
  });
  db.close();
}
