import { rmSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { DiskTemplates } from "../images/disk-templates.ts";
import { DEFAULT_OVERLAY_BYTES } from "../images/disks.ts";
import type { ImageRow, KernelRow } from "../store/artifacts.ts";
import type { VmRow } from "../store/vms.ts";
import { allocate } from "./allocate.ts";
import { createPolicy } from "./net-apply.ts";
import { checkGroup } from "./net-policy.ts";
import { onFullDisk } from "./no-space.ts";
import { randomName, type VmCreateInput } from "./model.ts";
import type { Runtime, VmServiceDeps } from "./deps.ts";
import { dirOf, makeHostKey, startSteps, type StartCtx } from "./start-stop.ts";
import type { Mutex } from "./locks.ts";
import type { Step, StepEntry } from "./steps.ts";
import { parseSize } from "../units.ts";

/** The create-only context: the start context plus what create resolves first. */
export interface CreateCtx extends StartCtx {
  params: VmCreateInput;
}

/** Finds the image and its kernel, or says how to get them. */
export function resolveArtifacts(deps: VmServiceDeps, imageName: string | undefined, kernelName: string | undefined): { image: ImageRow; kernel: KernelRow } {
  const name = imageName ?? deps.config.default_image;
  const image = deps.artifacts.image(name);
  if (!image) {
    throw new BangerError("not_found", `image "${name}" is not present`, {
      hint: deps.config.image_catalog ? `Run \`banger image pull ${name}\`.` : "Run `banger image build` (or `banger image import`), then try again.",
    });
  }
  const kname = kernelName ?? image.kernel ?? deps.config.default_kernel;
  const kernel = deps.artifacts.kernel(kname);
  if (!kernel)
    throw new BangerError("not_found", `kernel "${kname}" is not registered`, {
      hint: `Run \`banger kernel import <vmlinux> --name ${kname}\` or \`banger kernel pull ${kname}\`.`,
    });
  return { image, kernel };
}

/**
 * The named create steps: resolve, allocate, the disks with the network beside them, then the
 * shared start steps. The two disks stay one after the other: run side by side, a full disk
 * would be blamed on whichever file lost the race.
 */
export function createSteps(deps: VmServiceDeps, rt: Runtime, allocLock: Mutex): StepEntry<CreateCtx>[] {
  const templates = new DiskTemplates(join(deps.paths.cacheDir, "disk-templates"), { runner: deps.runner });
  const [network, ...booting] = startSteps(deps, rt) as Step<CreateCtx>[];
  if (network?.name !== "network") throw new Error("the start steps no longer begin with network");
  // On node's thread pool: a new inode can cost the daemon's one JS thread milliseconds (see config-drive.ts).
  const vmDir = (ctx: CreateCtx) => mkdir(ctx.dir.dir, { recursive: true, mode: 0o700 });
  const dropDir = async (ctx: CreateCtx) => {
    if (ctx.dir?.dir) rmSync(ctx.dir.dir, { recursive: true, force: true });
  };
  const rootfs: Step<CreateCtx> = {
    name: "rootfs",
    run: async (ctx) => {
      await vmDir(ctx);
      // One after the other, for the same reason as the disks.
      await onFullDisk("host key", ctx.dir.hostKey, deps.paths.vmsDir, () => makeHostKey(deps, ctx.dir, ctx.vm.name));
      await onFullDisk("overlay disk", ctx.dir.overlay, deps.paths.vmsDir, () => templates.overlay(ctx.dir.overlay, DEFAULT_OVERLAY_BYTES));
    },
    undo: dropDir,
  };
  const workDisk: Step<CreateCtx> = {
    name: "work disk",
    run: async (ctx) => {
      await vmDir(ctx);
      await onFullDisk("work disk", ctx.dir.workDisk, deps.paths.vmsDir, () =>
        templates.workDisk({ seed: ctx.image.work_seed_path, path: ctx.dir.workDisk, sizeBytes: ctx.vm.disk_bytes }),
      );
    },
    undo: dropDir,
  };
  return [
    {
      name: "resolve image",
      run: async (ctx) => {
        const wanted = ctx.params.image ?? deps.config.default_image;
        if (!deps.artifacts.image(wanted) && deps.config.image_catalog && deps.pullImage) await deps.pullImage(wanted);
        const { image, kernel } = resolveArtifacts(deps, ctx.params.image, ctx.params.kernel);
        ctx.image = image;
        ctx.kernel = kernel;
      },
    },
    {
      name: "allocate",
      run: (ctx) => allocLock.run(async () => allocateRow(deps, ctx)),
      undo: async (ctx) => {
        if (ctx.vm?.id) deps.vms.delete(ctx.vm.id);
      },
    },
    { together: [[rootfs, workDisk], [network]] },
    ...booting,
  ];
}

export async function allocateRow(deps: VmServiceDeps, ctx: CreateCtx) {
  const existing = deps.vms.list();
  const names = new Set(existing.map((v) => v.name));
  const name = ctx.params.name ?? randomName(names);
  if (names.has(name))
    throw new BangerError("already_exists", `a VM named "${name}" already exists`, { hint: `Pick another --name, or \`banger vm delete ${name}\` first.` });
  const a = allocate(deps.config.subnet, deps.network.poolTaps(), {
    ips: new Set(existing.map((v) => v.ip)),
    cids: new Set(existing.map((v) => v.cid)),
    taps: new Set(existing.map((v) => v.tap)),
  });
  const now = new Date().toISOString();
  const net = createPolicy(ctx.params, deps.config);
  const vm: VmRow = {
    id: randomBytes(6).toString("hex"),
    name,
    image: ctx.image.name,
    kernel: ctx.kernel.name,
    vmm: deps.defaultVmm(),
    cpus: ctx.params.cpus ?? deps.config.cpus,
    memory_mib: ctx.params.memory ?? deps.config.memory,
    disk_bytes: ctx.params.disk ?? parseSize(deps.config.disk)!,
    nat: net === "nat",
    net,
    net_group: checkGroup((ctx.params.group ?? "").trim().toLowerCase()),
    state: "creating",
    desired_state: "running",
    ...a,
    teardown: {},
    last_error: null,
    created_at: now,
    updated_at: now,
    started_at: null,
  };
  deps.vms.insert(vm);
  ctx.vm = vm;
  ctx.dir = dirOf(deps, vm.id);
}
