import type { Database } from "bun:sqlite";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import { buildKernel } from "../images/kernel-config.ts";
import type { Config } from "../config.ts";
import { BangerError } from "../errors.ts";
import type { Paths } from "../host/paths.ts";
import { cancellableRunner, type Runner } from "../host/runner.ts";
import { deleteKernel, importKernel, pullKernel, type KernelInfo } from "../images/kernels.ts";
import type { Handlers } from "../rpc/handle.ts";
import { ArtifactStore, type KernelRow } from "../store/artifacts.ts";
import type { VmService } from "../vm/service.ts";
import { imageHandlers } from "./image-handlers.ts";

export interface ArtifactDeps {
  paths: Paths;
  config: Config;
  db: Database;
  log(msg: string): void;
  runner: Runner;
  vms: VmService;
}

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

/** RPC handlers for `kernel` and `image`. */
export function artifactHandlers(deps: ArtifactDeps): Handlers {
  const store = new ArtifactStore(deps.db);
  const kernelsDir = deps.paths.kernelsDir;
  mkdirSync(kernelsDir, { recursive: true });
  const must = (name: string) => {
    const k = store.kernel(name);
    if (!k) throw new BangerError("not_found", `kernel ${name} is not registered`, { hint: "`banger kernel list` shows the kernels." });
    return k;
  };
  return {
    "kernel.list": async () => store.kernels(),
    "kernel.show": async (p) => must(p.name),
    "kernel.import": async (p) => {
      if (p.name && store.kernel(p.name)) {
        if (!p.force)
          throw new BangerError("already_exists", `kernel ${p.name} already exists`, { hint: `Pick another --name, or pass --force to replace it.` });
        await deleteKernel(kernelsDir, p.name).catch(() => {});
      }
      const k = await importKernel({ src: resolve(p.path), kernelsDir, name: p.name });
      const row = kernelRow(k, `import:${resolve(p.path)}`);
      store.putKernel(row);
      return row;
    },
    "kernel.pull": async (p, ctx) => {
      if (!deps.config.kernel_catalog)
        throw new BangerError("failed_precondition", "no kernel catalog is configured", {
          hint: "Set kernel_catalog in the config, or use `banger kernel import`.",
        });
      ctx.progress({ stage: "download", status: "start" });
      const k = await pullKernel({ catalogUrl: deps.config.kernel_catalog, name: p.name, kernelsDir, fetch });
      ctx.progress({ stage: "download", status: "done" });
      const row = kernelRow(k, `catalog:${deps.config.kernel_catalog}`);
      store.putKernel(row);
      return row;
    },
    "kernel.build": async (p, ctx) => {
      const name = p.name ?? deps.config.default_kernel;
      if (store.kernel(name))
        throw new BangerError("already_exists", `kernel ${name} already exists`, {
          hint: `Delete it first (banger kernel delete ${name}) or pick another --name.`,
        });
      const work = mkdtempSync(join(kernelsDir, ".build-"));
      let current: { stage: string; at: number } | null = null;
      const onStage = (stage: string) => {
        if (current) ctx.progress({ stage: current.stage, status: "done", elapsedMs: Math.round(performance.now() - current.at) });
        current = { stage, at: performance.now() };
        ctx.progress({ stage, status: "start" });
      };
      try {
        const built = await buildKernel(
          { workDir: work, usrSrc: p.source, onStage },
          { runner: cancellableRunner(deps.runner, ctx.signal), cpus: availableParallelism() },
        );
        onStage("register");
        const k = await importKernel({ src: built.vmlinux, kernelsDir, name });
        const row = kernelRow(k, "build:linux-source");
        store.putKernel(row);
        return row;
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    },
    "kernel.delete": async (p) => {
      const k = must(p.name);
      const owner = /^image:(.+)$/.exec(k.source)?.[1];
      if (owner && store.image(owner))
        throw new BangerError("failed_precondition", `kernel ${p.name} is image ${owner}'s own kernel`, {
          hint: `It goes with the image: banger image delete ${owner}.`,
        });
      const users = deps.vms.deps.vms
        .list()
        .filter((v) => v.kernel === p.name)
        .map((v) => v.name);
      if (users.length) throw new BangerError("failed_precondition", `kernel ${p.name} is used by ${users.join(", ")}`, { hint: "Delete those VMs first." });
      await deleteKernel(kernelsDir, p.name).catch(() => {});
      store.deleteKernel(p.name);
      return { deleted: p.name };
    },
    ...imageHandlers({ ...deps, store }),
  };
}
