import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULTS } from "../config.ts";
import { resolvePaths } from "../host/paths.ts";
import { hostRunner, type Runner } from "../host/runner.ts";
import type { CallContext } from "../rpc/handle.ts";
import { ArtifactStore } from "../store/artifacts.ts";
import { openStore } from "../store/db.ts";
import { rejection } from "../testing/errors.ts";
import type { Config } from "../config.ts";
import type { Paths } from "../host/paths.ts";
import { ImageService } from "./image-service.ts";
import { KernelService } from "./kernel-service.ts";

/** The kernel and image services over a real store, with no VM using anything. */
function services(paths: Paths, store: ArtifactStore, runner: Runner, config: Config = DEFAULTS) {
  const deps = { paths, config, store, runner, usersOf: () => [], agentBinary: () => null };
  return { kernels: new KernelService(deps), images: new ImageService(deps) };
}

const root = mkdtempSync(join(tmpdir(), "banger-artifacts-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

test("a kernel build whose caller goes away stops its compile, registers nothing and leaves no build dir", async () => {
  const paths = resolvePaths({ HOME: root, XDG_RUNTIME_DIR: join(root, "run") });
  mkdirSync(paths.stateDir, { recursive: true });
  const usrSrc = join(root, "src");
  mkdirSync(usrSrc);
  writeFileSync(join(usrSrc, "linux-source-6.1.tar.xz"), "");
  const marker = `banger-compile-${process.pid}`;
  // Extract and configure pretend to succeed; the compile is a real process that only a cancel ends.
  const runner: Runner = {
    run: (argv, opts) => {
      if (argv[0] === "make" && argv.includes("vmlinux")) return hostRunner.run(["sh", "-c", `sleep 60; : ${marker}`], opts);
      if (argv[0] === "tar") mkdirSync(join(argv[2]!, "linux-source-6.1"), { recursive: true });
      return Promise.resolve({ code: 0, stdout: "", stderr: "" });
    },
  };
  const db = openStore(paths.dbFile);
  const { kernels } = services(paths, new ArtifactStore(db), runner);
  const abort = new AbortController();
  const stages: string[] = [];
  const ctx: CallContext = {
    signal: abort.signal,
    progress: (e) => {
      if (e.status === "start") stages.push(e.stage);
      if (e.stage === "compile") setTimeout(() => abort.abort(), 200);
    },
  };
  const e = await rejection(kernels.build({ name: "k", source: usrSrc }, ctx));
  expect(e.code).toBe("cancelled");
  expect(stages).toEqual(["extract", "configure", "compile"]);
  expect(kernels.list()).toEqual([]);
  expect(readdirSync(paths.kernelsDir)).toEqual([]);
  expect(Bun.spawnSync(["pgrep", "-f", marker]).exitCode).toBe(1);
  db.close();
});

test("an image's own kernel goes with the image: kernel delete refuses it, image delete removes it", async () => {
  const paths = resolvePaths({ HOME: join(root, "own"), XDG_RUNTIME_DIR: join(root, "own-run") });
  const dir = join(paths.imagesDir, "deb");
  mkdirSync(dir, { recursive: true });
  for (const f of ["rootfs.ext4", "work-seed.ext4", "vmlinux", "initrd.img"]) writeFileSync(join(dir, f), "x");
  const db = openStore(paths.dbFile);
  const store = new ArtifactStore(db);
  const now = new Date(0).toISOString();
  store.putKernel({
    name: "deb-kernel",
    version: "6.1.0-57-cloud-amd64",
    path: join(dir, "vmlinux"),
    sha256: "0".repeat(64),
    size_bytes: 1,
    source: "image:deb",
    created_at: now,
    initrd_path: join(dir, "initrd.img"),
  });
  store.putImage({
    name: "deb",
    rootfs_path: join(dir, "rootfs.ext4"),
    work_seed_path: join(dir, "work-seed.ext4"),
    kernel: "deb-kernel",
    agent_version: "t",
    fingerprint: "t",
    size_bytes: 1,
    source: "build:debian-bookworm",
    created_at: now,
  });
  const { kernels, images } = services(paths, store, hostRunner);
  const e = await rejection(kernels.delete("deb-kernel"));
  expect(e.code).toBe("failed_precondition");
  expect(e.hint).toContain("banger image delete deb");
  expect(store.kernel("deb-kernel")?.initrd_path).toBe(join(dir, "initrd.img"));
  images.delete("deb");
  expect(store.kernel("deb-kernel")).toBeNull();
  expect(existsSync(dir)).toBe(false);
  db.close();
});

test("image pull without a catalog, and image build or import without the agent executable, are refused with the fix and register nothing", async () => {
  const paths = resolvePaths({ HOME: join(root, "none"), XDG_RUNTIME_DIR: join(root, "none-run") });
  mkdirSync(paths.stateDir, { recursive: true });
  const db = openStore(paths.dbFile);
  const { images } = services(paths, new ArtifactStore(db), hostRunner, { ...DEFAULTS, image_catalog: "" });
  const ctx: CallContext = { signal: new AbortController().signal, progress: () => {} };
  const pull = await rejection(images.pull("deb"));
  expect([pull.code, pull.hint]).toEqual(["failed_precondition", "Set image_catalog in the config, or use `banger image build`."]);
  const build = await rejection(images.build({ name: "deb" }, ctx));
  expect(build.message).toContain("banger-agent");
  expect(build.hint).toContain("bun run build");
  const imp = await rejection(images.import({ source: "/nowhere", name: "x", kernel: "k", kernelFrom: "deb" }, ctx));
  expect(imp.code).toBe("invalid_argument");
  expect(images.list()).toEqual([]);
  db.close();
});
