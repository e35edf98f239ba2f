import { rmSync } from "node:fs";
import { dirname } from "node:path";
import { configSizes } from "../config.ts";
import { BangerError } from "../errors.ts";
import type { Handlers } from "../rpc/handle.ts";
import { join } from "node:path";
import { buildImage } from "../images/build.ts";
import { cancellableRunner } from "../host/runner.ts";
import type { ImageKernel } from "../images/image-kernel.ts";
import type { ArtifactStore, ImageRow, KernelRow } from "../store/artifacts.ts";
import { agentBinaryPath } from "./services.ts";
import { importImage } from "./image-import.ts";
import { pullImage } from "../images/image-pull.ts";
import type { ArtifactDeps } from "./artifact-handlers.ts";

/** Pulls an image from the configured catalog and registers it. */
export async function pullAndRegister(deps: Pick<ArtifactDeps, "config" | "paths" | "runner">, store: ArtifactStore, name: string): Promise<ImageRow> {
  if (!deps.config.image_catalog)
    throw new BangerError("failed_precondition", "no image catalog is configured", { hint: "Set image_catalog in the config, or use `banger image build`." });
  if (store.image(name)) throw new BangerError("already_exists", `image ${name} already exists`, { hint: `Delete it first (banger image delete ${name}).` });
  const img = await pullImage({ catalogUrl: deps.config.image_catalog, name, imagesDir: deps.paths.imagesDir, fetch, runner: deps.runner });
  const row: ImageRow = {
    name,
    rootfs_path: img.rootfs,
    work_seed_path: img.workSeed,
    kernel: img.kernel && store.kernel(img.kernel) ? img.kernel : null,
    agent_version: img.agentVersion,
    fingerprint: img.sha256,
    size_bytes: img.sizeBytes,
    source: `catalog:${deps.config.image_catalog}`,
    created_at: new Date().toISOString(),
  };
  store.putImage(row);
  return row;
}

/** The name an image's own kernel is registered under. */
export const imageKernelName = (image: string) => `${image}-kernel`;

/** The kernel row for the kernel an image build installed (its files live in the image's directory). */
function imageKernelRow(image: string, k: ImageKernel): KernelRow {
  return {
    name: imageKernelName(image),
    version: k.release,
    path: k.vmlinux,
    sha256: k.sha256,
    size_bytes: k.size,
    source: `image:${image}`,
    created_at: new Date().toISOString(),
    initrd_path: k.initrd,
  };
}

/** Refuses a build whose own kernel's name is taken by a kernel that is not a leftover of the same image. */
function checkKernelNameFree(store: ArtifactStore, image: string): void {
  const taken = store.kernel(imageKernelName(image));
  if (taken && taken.source !== `image:${image}`) {
    throw new BangerError("already_exists", `kernel ${taken.name} already exists; image ${image} would register its own kernel under that name`, {
      hint: `Delete it (banger kernel delete ${taken.name}) or pick another image --name.`,
    });
  }
}

/** The kernel of a built image and where its modules are, for `image import --kernel-from`. */
function builtImageKernel(store: ArtifactStore, image: string): { kernel: string; modules: { rootfs: string; release: string } } {
  const src = store.image(image);
  const k = src?.kernel ? store.kernel(src.kernel) : null;
  if (!src || !k || k.source !== `image:${image}`) {
    throw new BangerError("not_found", `image ${image} is not an image with its own kernel`, {
      hint: "Name an image made by `banger image build` (see banger image list).",
    });
  }
  return { kernel: k.name, modules: { rootfs: src.rootfs_path, release: k.version } };
}

/** RPC handlers for `image`. */
export function imageHandlers(deps: ArtifactDeps & { store: ArtifactStore }): Handlers {
  const { store } = deps;
  const must = (name: string) => {
    const i = store.image(name);
    if (!i)
      throw new BangerError("not_found", `image ${name} is not present`, {
        hint: "`banger image list` shows the images; `banger image build` makes the default one.",
      });
    return i;
  };
  /** The kernel an image is paired with: the one asked for, else the default, else the only one. */
  const pairKernel = (name?: string): string | null => {
    if (name) {
      if (!store.kernel(name)) throw new BangerError("not_found", `kernel ${name} is not registered`, { hint: "`banger kernel list` shows the kernels." });
      return name;
    }
    if (store.kernel(deps.config.default_kernel)) return deps.config.default_kernel;
    const all = store.kernels();
    return all.length === 1 ? all[0]!.name : null;
  };
  return {
    "image.pull": async (p, ctx) => {
      ctx.progress({ stage: "download", status: "start" });
      const row = await pullAndRegister(deps, store, p.name);
      ctx.progress({ stage: "download", status: "done" });
      return row;
    },
    "image.build": async (p, ctx) => {
      const name = p.name ?? deps.config.default_image;
      if (store.image(name))
        throw new BangerError("already_exists", `image ${name} already exists`, {
          hint: `Delete it first (banger image delete ${name}) or pick another --name.`,
        });
      const paired = p.kernel ? pairKernel(p.kernel) : null;
      checkKernelNameFree(store, name);
      const agentBinary = agentBinaryPath();
      if (!agentBinary)
        throw new BangerError("failed_precondition", "the guest agent executable (banger-agent) is not beside banger", {
          hint: "Build with `bun run build`, which makes dist/banger and dist/banger-agent together.",
        });
      let current: { stage: string; at: number } | null = null;
      const onStage = (stage: string) => {
        if (current) ctx.progress({ stage: current.stage, status: "done", elapsedMs: Math.round(performance.now() - current.at) });
        current = { stage, at: performance.now() };
        ctx.progress({ stage, status: "start" });
      };
      const built = await buildImage(
        { name, outDir: join(deps.paths.imagesDir, name), agentBinary, extraPackages: p.packages, onStage },
        { runner: cancellableRunner(deps.runner, ctx.signal), uid: process.getuid?.() ?? 0, which: (b) => Bun.which(b) },
      );
      if (current) onStage("register");
      const own = imageKernelRow(name, built.kernel);
      store.putKernel(own);
      const row: ImageRow = {
        name,
        rootfs_path: built.rootfs,
        work_seed_path: built.workSeed,
        kernel: paired ?? own.name,
        agent_version: built.agentVersion,
        fingerprint: built.fingerprint,
        size_bytes: built.sizeBytes,
        source: "build:debian-bookworm",
        created_at: new Date().toISOString(),
      };
      store.putImage(row);
      return { ...row, kernel_version: own.version, packages: built.packages.length };
    },
    "image.import": async (p, ctx) => {
      if (store.image(p.name))
        throw new BangerError("already_exists", `image ${p.name} already exists`, {
          hint: `Delete it first (banger image delete ${p.name}) or pick another --name.`,
        });
      if (p.kernel && p.kernelFrom) throw new BangerError("invalid_argument", "--kernel and --kernel-from both name a kernel", { hint: "Pass one of them." });
      const from = p.kernelFrom ? builtImageKernel(store, p.kernelFrom) : null;
      const kernel = from ? from.kernel : pairKernel(p.kernel);
      const agentBinary = agentBinaryPath();
      if (!agentBinary)
        throw new BangerError("failed_precondition", "the guest agent executable (banger-agent) is not beside banger", { hint: "Build with `bun run build`." });
      const limits = { maxBytes: configSizes(deps.config).importMaxBytes, maxEntries: deps.config.import_max_entries };
      const progress = (line: string) => ctx.progress({ stage: "import", status: "info", message: line });
      const row = await importImage({
        source: p.source,
        name: p.name,
        kernel,
        modulesFrom: from?.modules,
        imagesDir: deps.paths.imagesDir,
        agentBinary,
        runner: cancellableRunner(deps.runner, ctx.signal),
        limits,
        progress,
        signal: ctx.signal,
      });
      store.putImage(row);
      return row;
    },
    "image.list": async () => store.images(),
    "image.show": async (p) => must(p.name),
    "image.delete": async (p) => {
      const image = must(p.name);
      const users = deps.vms.deps.vms
        .list()
        .filter((v) => v.image === p.name)
        .map((v) => v.name);
      if (users.length)
        throw new BangerError("failed_precondition", `image ${p.name} is used by ${users.join(", ")}`, {
          hint: `Delete those VMs first (banger vm delete ${users.join(" ")}).`,
        });
      const own = store.kernel(imageKernelName(p.name));
      const kernelUsers =
        own?.source === `image:${p.name}`
          ? deps.vms.deps.vms
              .list()
              .filter((v) => v.kernel === own.name)
              .map((v) => v.name)
          : [];
      if (kernelUsers.length)
        throw new BangerError("failed_precondition", `image ${p.name}'s kernel is used by ${kernelUsers.join(", ")}`, {
          hint: `Delete those VMs first (banger vm delete ${kernelUsers.join(" ")}).`,
        });
      rmSync(dirname(image.rootfs_path), { recursive: true, force: true });
      rmSync(image.work_seed_path, { force: true });
      if (own?.source === `image:${p.name}`) store.deleteKernel(own.name);
      store.deleteImage(p.name);
      return { deleted: p.name };
    },
  };
}
