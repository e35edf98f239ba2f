import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { hostRunner } from "../host/runner.ts";
import { ArtifactStore, type ImageRow, type KernelRow } from "../store/artifacts.ts";
import { openStore } from "../store/db.ts";
import { bangerBin, TestHome, warmOff } from "./cli.ts";
import { privateNet } from "./fake-env.ts";
import { buildOnce, guestChecks } from "./guest-fixtures.ts";
import { hasBin, hasFile, isRoot, projectRoot, sharedDir, testCacheDir } from "./skip.ts";

/** Prerequisites of a test that boots real guests through banger. */
export function realGuestChecks(): Array<[boolean, string]> {
  return [
    ...guestChecks(),
    [hasFile(bangerBin) && hasFile(join(projectRoot, "dist", "banger-agent")), "dist/banger and dist/banger-agent not built (bun run build)"],
    [isRoot, "needs root (host setup: bridge, TAPs, firewall)"],
    [hasBin("nft") || hasBin("iptables"), "needs nftables or iptables"],
  ];
}

/** The fixture kernel, as banger imports it. */
export const fixtureKernel = join(sharedDir, "kernels", "vmlinux-6.1.192.zst");

async function fileHash(paths: string[]): Promise<string> {
  const h = new Bun.CryptoHasher("sha256");
  for (const p of paths) h.update(await Bun.file(p).arrayBuffer());
  return h.digest("hex").slice(0, 12);
}

/**
 * The golden image made by the real `banger image build`, built once per set of inputs
 * (glue, build code, agent sources) and cached; returns its directory and metadata.
 */
export async function goldenImage(): Promise<{ dir: string; meta: ImageRow }> {
  const glue = Array.from(new Bun.Glob("src/images/glue/*").scanSync({ cwd: projectRoot }), (f) => join(projectRoot, f));
  const agent = (await hostRunner.run([join(projectRoot, "dist", "banger-agent"), "--version"])).stdout.trim();
  const inputs = [
    ...glue.sort(),
    ...["build.ts", "image-kernel.ts", "kernel/initrd.ts", "kernel/initrd-init.sh"].map((f) => join(projectRoot, "src/images", f)),
  ];
  const key = `${await fileHash(inputs)}-${agent.replace(/[^A-Za-z0-9.+-]/g, "")}`;
  const dir = await buildOnce(join(testCacheDir, `banger-image-${key}`), async (tmp) => {
    const home = new TestHome();
    try {
      const r = await home.run(["image", "build", "--name", "golden", "--json"]);
      if (r.code !== 0) throw new Error(`image build failed: ${r.stderr}`);
      const row = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as ImageRow;
      mkdirSync(tmp, { recursive: true });
      await hostRunner.run(["cp", "--sparse=always", row.rootfs_path, join(tmp, "rootfs.ext4")]);
      await hostRunner.run(["cp", "--sparse=always", row.work_seed_path, join(tmp, "work-seed.ext4")]);
      const kernel = JSON.parse((await home.run(["kernel", "show", row.kernel!, "--json"])).stdout) as KernelRow;
      copyFileSync(kernel.path, join(tmp, "vmlinux"));
      copyFileSync(kernel.initrd_path!, join(tmp, "initrd.img"));
      writeFileSync(join(tmp, "meta.json"), JSON.stringify(row));
      writeFileSync(join(tmp, "kernel.json"), JSON.stringify(kernel));
    } finally {
      await home.cleanup();
    }
  });
  return { dir, meta: JSON.parse(readFileSync(join(dir, "meta.json"), "utf8")) };
}

export type RealHome = TestHome & { teardownNet(): Promise<void>; bridge: string; subnet: string };

/**
 * A TestHome using QEMU on a private bridge set up by the real `host setup`, the fixture
 * kernel imported by `kernel import`, and the cached golden image registered as "bookworm".
 */
export async function realHome(opts: { taps?: number; config?: string; env?: Record<string, string> } = {}): Promise<RealHome> {
  const { bridge, subnet } = privateNet();
  const home = new TestHome(opts.env) as RealHome;
  home.bridge = bridge;
  home.subnet = subnet;
  mkdirSync(join(home.env.XDG_CONFIG_HOME!, "banger"), { recursive: true });
  const port = 20000 + Math.floor(Math.random() * 20000);
  writeFileSync(
    home.paths.configFile,
    `vmm = "qemu"\nbridge = "${bridge}"\nsubnet = "${subnet}"\ntap_pool = ${opts.taps ?? 6}\ndns_listen = "127.0.0.1:${port}"\n` +
      `stop_grace = "20s"\n${warmOff(opts.config)}${opts.config ?? ""}`,
  );
  home.teardownNet = async () => void (await home.run(["host", "teardown"]));
  try {
    const setup = await home.run(["host", "setup"]);
    if (setup.code !== 0) throw new Error(`host setup failed: ${setup.stderr}`);
    const k = await home.run(["kernel", "import", fixtureKernel, "--name", "default"]);
    if (k.code !== 0) throw new Error(`kernel import failed: ${k.stderr}`);
    await registerGolden(home);
  } catch (err) {
    await home.teardownNet();
    await home.cleanup();
    throw err;
  }
  return home;
}

/** Copies the cached golden image into a home and registers it (what `image build` would have made). */
export async function registerGolden(home: TestHome, name = "bookworm") {
  const { dir, meta } = await goldenImage();
  const dest = join(home.paths.imagesDir, name);
  mkdirSync(dest, { recursive: true });
  for (const f of ["rootfs.ext4", "work-seed.ext4"]) {
    if (!existsSync(join(dest, f))) await hostRunner.run(["cp", "--sparse=always", "--reflink=auto", join(dir, f), join(dest, f)]);
  }
  await home.run(["daemon", "stop"]);
  const db = openStore(home.paths.dbFile);
  new ArtifactStore(db).putImage({ ...meta, name, rootfs_path: join(dest, "rootfs.ext4"), work_seed_path: join(dest, "work-seed.ext4"), kernel: "default" });
  db.close();
}

/**
 * Registers the cached golden image's own kernel (Debian's, with banger's initrd) in a home
 * under `name`, with `initrd` in place of banger's when given; returns the kernel's release.
 */
export async function registerGoldenKernel(home: TestHome, name: string, initrd?: string): Promise<string> {
  const { dir } = await goldenImage();
  const kernel = JSON.parse(readFileSync(join(dir, "kernel.json"), "utf8")) as KernelRow;
  const dest = join(home.paths.kernelsDir, name);
  mkdirSync(dest, { recursive: true });
  copyFileSync(join(dir, "vmlinux"), join(dest, "vmlinux"));
  copyFileSync(initrd ?? join(dir, "initrd.img"), join(dest, "initrd.img"));
  await home.run(["daemon", "stop"]);
  const db = openStore(home.paths.dbFile);
  new ArtifactStore(db).putKernel({ ...kernel, name, path: join(dest, "vmlinux"), initrd_path: join(dest, "initrd.img"), source: "test" });
  db.close();
  return kernel.version;
}
