import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { configSizes } from "../config.ts";
import { BangerError } from "../errors.ts";
import { cancellableRunner } from "../host/runner.ts";
import type { ImageRow, KernelRow } from "../store/artifacts.ts";
import type { CallContext } from "../vm/model.ts";
import { type ArtifactDeps, stageReporter } from "./artifact-deps.ts";
import { buildImage } from "./build.ts";
import { importImage } from "./image-import.ts";
import type { ImageKernel } from "./image-kernel.ts";
import { pullImage } from "./image-pull.ts";

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

/** What `image build` answers: the image, its kernel's version and how many packages it holds. */
export type BuiltImage = ImageRow & { kernel_version: string; packages: number };

/** The image use cases behind the `image` RPC methods (and vm create's pull of a missing image). */
export class ImageService {
  constructor(private readonly deps: ArtifactDeps) {}

  list(): ImageRow[] {
    return this.deps.store.images();
  }

  show(name: string): ImageRow {
    const i = this.deps.store.image(name);
    if (!i)
      throw new BangerError("not_found", `image ${name} is not present`, {
        hint: "`banger image list` shows the images; `banger image build` makes the default one.",
      });
    return i;
  }

  /** Pulls an image from the configured catalog and registers it. */
  async pull(name: string, call?: CallContext): Promise<ImageRow> {
    const { config, store } = this.deps;
    call?.progress({ stage: "download", status: "start" });
    if (!config.image_catalog)
      throw new BangerError("failed_precondition", "no image catalog is configured", { hint: "Set image_catalog in the config, or use `banger image build`." });
    if (store.image(name)) throw new BangerError("already_exists", `image ${name} already exists`, { hint: `Delete it first (banger image delete ${name}).` });
    const img = await pullImage({ catalogUrl: config.image_catalog, name, imagesDir: this.deps.paths.imagesDir, fetch, runner: this.deps.runner });
    call?.progress({ stage: "download", status: "done" });
    return this.register({
      name,
      rootfs_path: img.rootfs,
      work_seed_path: img.workSeed,
      kernel: img.kernel && store.kernel(img.kernel) ? img.kernel : null,
      agent_version: img.agentVersion,
      fingerprint: img.sha256,
      size_bytes: img.sizeBytes,
      source: `catalog:${config.image_catalog}`,
      created_at: new Date().toISOString(),
    });
  }

  /** Builds a Debian image with mmdebstrap, registering its own kernel beside it. */
  async build(p: { name?: string; kernel?: string; packages?: string[] }, call: CallContext): Promise<BuiltImage> {
    const name = p.name ?? this.deps.config.default_image;
    this.refuseTaken(name);
    const paired = p.kernel ? this.pairKernel(p.kernel) : null;
    this.checkKernelNameFree(name);
    const agentBinary = this.agentBinary("Build with `bun run build`, which makes dist/banger and dist/banger-agent together.");
    const stages = stageReporter(call);
    const built = await buildImage(
      { name, outDir: join(this.deps.paths.imagesDir, name), agentBinary, extraPackages: p.packages, onStage: stages.onStage },
      { runner: cancellableRunner(this.deps.runner, call.signal), uid: process.getuid?.() ?? 0, which: (b) => Bun.which(b) },
    );
    if (stages.started()) stages.onStage("register");
    const own = imageKernelRow(name, built.kernel);
    this.deps.store.putKernel(own);
    const row = this.register({
      name,
      rootfs_path: built.rootfs,
      work_seed_path: built.workSeed,
      kernel: paired ?? own.name,
      agent_version: built.agentVersion,
      fingerprint: built.fingerprint,
      size_bytes: built.sizeBytes,
      source: "build:debian-bookworm",
      created_at: new Date().toISOString(),
    });
    return { ...row, kernel_version: own.version, packages: built.packages.length };
  }

  /** Imports an OCI image (layout, docker save, oci-archive or registry://) in a worker process. */
  async import(p: { source: string; name: string; kernel?: string; kernelFrom?: string }, call: CallContext): Promise<ImageRow> {
    this.refuseTaken(p.name);
    if (p.kernel && p.kernelFrom) throw new BangerError("invalid_argument", "--kernel and --kernel-from both name a kernel", { hint: "Pass one of them." });
    const from = p.kernelFrom ? this.builtImageKernel(p.kernelFrom) : null;
    const kernel = from ? from.kernel : this.pairKernel(p.kernel);
    const agentBinary = this.agentBinary("Build with `bun run build`.");
    const row = await importImage({
      source: p.source,
      name: p.name,
      kernel,
      modulesFrom: from?.modules,
      imagesDir: this.deps.paths.imagesDir,
      agentBinary,
      runner: cancellableRunner(this.deps.runner, call.signal),
      limits: { maxBytes: configSizes(this.deps.config).importMaxBytes, maxEntries: this.deps.config.import_max_entries },
      progress: (line) => call.progress({ stage: "import", status: "info", message: line }),
      signal: call.signal,
    });
    return this.register(row);
  }

  /** Deletes an image no VM uses, with its own kernel (which no VM may use either). */
  delete(name: string): { deleted: string } {
    const image = this.show(name);
    const users = this.deps.usersOf({ image: name });
    if (users.length)
      throw new BangerError("failed_precondition", `image ${name} is used by ${users.join(", ")}`, {
        hint: `Delete those VMs first (banger vm delete ${users.join(" ")}).`,
      });
    const own = this.deps.store.kernel(imageKernelName(name));
    const ownKernel = own?.source === `image:${name}` ? own : null;
    const kernelUsers = ownKernel ? this.deps.usersOf({ kernel: ownKernel.name }) : [];
    if (kernelUsers.length)
      throw new BangerError("failed_precondition", `image ${name}'s kernel is used by ${kernelUsers.join(", ")}`, {
        hint: `Delete those VMs first (banger vm delete ${kernelUsers.join(" ")}).`,
      });
    rmSync(dirname(image.rootfs_path), { recursive: true, force: true });
    rmSync(image.work_seed_path, { force: true });
    if (ownKernel) this.deps.store.deleteKernel(ownKernel.name);
    this.deps.store.deleteImage(name);
    return { deleted: name };
  }

  private register(row: ImageRow): ImageRow {
    this.deps.store.putImage(row);
    return row;
  }

  private refuseTaken(name: string): void {
    if (this.deps.store.image(name))
      throw new BangerError("already_exists", `image ${name} already exists`, {
        hint: `Delete it first (banger image delete ${name}) or pick another --name.`,
      });
  }

  private agentBinary(hint: string): string {
    const path = this.deps.agentBinary();
    if (!path) throw new BangerError("failed_precondition", "the guest agent executable (banger-agent) is not beside banger", { hint });
    return path;
  }

  /** The kernel an image is paired with: the one asked for, else the default, else the only one. */
  private pairKernel(name?: string): string | null {
    const { store, config } = this.deps;
    if (name) {
      if (!store.kernel(name)) throw new BangerError("not_found", `kernel ${name} is not registered`, { hint: "`banger kernel list` shows the kernels." });
      return name;
    }
    if (store.kernel(config.default_kernel)) return config.default_kernel;
    const all = store.kernels();
    return all.length === 1 ? all[0]!.name : null;
  }

  /** Refuses a build whose own kernel's name is taken by a kernel that is not a leftover of the same image. */
  private checkKernelNameFree(image: string): void {
    const taken = this.deps.store.kernel(imageKernelName(image));
    if (taken && taken.source !== `image:${image}`) {
      throw new BangerError("already_exists", `kernel ${taken.name} already exists; image ${image} would register its own kernel under that name`, {
        hint: `Delete it (banger kernel delete ${taken.name}) or pick another image --name.`,
      });
    }
  }

  /** The kernel of a built image and where its modules are, for `image import --kernel-from`. */
  private builtImageKernel(image: string): { kernel: string; modules: { rootfs: string; release: string } } {
    const src = this.deps.store.image(image);
    const k = src?.kernel ? this.deps.store.kernel(src.kernel) : null;
    if (!src || !k || k.source !== `image:${image}`) {
      throw new BangerError("not_found", `image ${image} is not an image with its own kernel`, {
        hint: "Name an image made by `banger image build` (see banger image list).",
      });
    }
    return { kernel: k.name, modules: { rootfs: src.rootfs_path, release: k.version } };
  }
}
