import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import { BangerError } from "../errors.ts";
import { cancellableRunner } from "../host/runner.ts";
import type { KernelRow } from "../store/artifacts.ts";
import type { CallContext } from "../vm/model.ts";
import { type ArtifactDeps, stageReporter } from "./artifact-deps.ts";
import { buildKernel } from "./kernel-config.ts";
import { deleteKernel, importKernel, type KernelInfo, pullKernel } from "./kernels.ts";

function kernelRow(k: KernelInfo, source: string): KernelRow {
  return {
    name: k.name,
    version: k.version,
    path: k.path,
    sha256: k.sha256,
    size_bytes: k.size,
    source,
    created_at: new Date().toISOString(),
    initrd_path: null,
  };
}

/** The kernel use cases behind the `kernel` RPC methods. */
export class KernelService {
  constructor(private readonly deps: ArtifactDeps) {
    mkdirSync(deps.paths.kernelsDir, { recursive: true });
  }

  private get dir(): string {
    return this.deps.paths.kernelsDir;
  }

  list(): KernelRow[] {
    return this.deps.store.kernels();
  }

  show(name: string): KernelRow {
    const k = this.deps.store.kernel(name);
    if (!k) throw new BangerError("not_found", `kernel ${name} is not registered`, { hint: "`banger kernel list` shows the kernels." });
    return k;
  }

  /** Registers a vmlinux from a host path (`--force` replaces a kernel of that name). */
  async import(p: { path: string; name?: string; force?: boolean }): Promise<KernelRow> {
    if (p.name && this.deps.store.kernel(p.name)) {
      if (!p.force) throw new BangerError("already_exists", `kernel ${p.name} already exists`, { hint: `Pick another --name, or pass --force to replace it.` });
      await deleteKernel(this.dir, p.name).catch(() => {});
    }
    const k = await importKernel({ src: resolve(p.path), kernelsDir: this.dir, name: p.name });
    return this.register(kernelRow(k, `import:${resolve(p.path)}`));
  }

  /** Downloads a kernel from the configured catalog. */
  async pull(name: string, call: CallContext): Promise<KernelRow> {
    const catalog = this.deps.config.kernel_catalog;
    if (!catalog)
      throw new BangerError("failed_precondition", "no kernel catalog is configured", {
        hint: "Set kernel_catalog in the config, or use `banger kernel import`.",
      });
    call.progress({ stage: "download", status: "start" });
    const k = await pullKernel({ catalogUrl: catalog, name, kernelsDir: this.dir, fetch });
    call.progress({ stage: "download", status: "done" });
    return this.register(kernelRow(k, `catalog:${catalog}`));
  }

  /** Compiles a kernel from Debian's linux-source; a cancel stops the compile and leaves nothing. */
  async build(p: { name?: string; source?: string }, call: CallContext): Promise<KernelRow> {
    const name = p.name ?? this.deps.config.default_kernel;
    if (this.deps.store.kernel(name))
      throw new BangerError("already_exists", `kernel ${name} already exists`, {
        hint: `Delete it first (banger kernel delete ${name}) or pick another --name.`,
      });
    const work = mkdtempSync(join(this.dir, ".build-"));
    const { onStage } = stageReporter(call);
    try {
      const built = await buildKernel(
        { workDir: work, usrSrc: p.source, onStage },
        { runner: cancellableRunner(this.deps.runner, call.signal), cpus: availableParallelism() },
      );
      onStage("register");
      const k = await importKernel({ src: built.vmlinux, kernelsDir: this.dir, name });
      return this.register(kernelRow(k, "build:linux-source"));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }

  /** Deletes a kernel no VM uses; an image's own kernel goes only with its image. */
  async delete(name: string): Promise<{ deleted: string }> {
    const k = this.show(name);
    const owner = /^image:(.+)$/.exec(k.source)?.[1];
    if (owner && this.deps.store.image(owner))
      throw new BangerError("failed_precondition", `kernel ${name} is image ${owner}'s own kernel`, {
        hint: `It goes with the image: banger image delete ${owner}.`,
      });
    const users = this.deps.usersOf({ kernel: name });
    if (users.length) throw new BangerError("failed_precondition", `kernel ${name} is used by ${users.join(", ")}`, { hint: "Delete those VMs first." });
    await deleteKernel(this.dir, name).catch(() => {});
    this.deps.store.deleteKernel(name);
    return { deleted: name };
  }

  private register(row: KernelRow): KernelRow {
    this.deps.store.putKernel(row);
    return row;
  }
}
