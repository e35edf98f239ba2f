/**
 * Warm start: after a cold create reaches ready, the new VM is paused for as long as its device
 * state, RAM and disks take to copy into a "golden" in the cache directory, then runs on. A later
 * create with the same key (image, kernel, cpus, memory, VMM) restores a private copy of the golden
 * and re-identifies it through the agent, exactly as a fork copy is made, instead of booting. The
 * work-disk size is not in the key: the golden records its own, serves any request at least that
 * large (the copy's disk is grown online), and a smaller request boots cold and then keeps its
 * smaller golden in place of the larger one, so one golden per key serves the widest range. The
 * VMM version and accelerator are recorded with the saved state and checked on use.
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { CallContext, VmCreateInput } from "./model.ts";
import type { ImageRow, KernelRow } from "../store/artifacts.ts";
import type { VmRow } from "../store/vms.ts";
import type { Runtime, VmServiceDeps } from "./deps.ts";
import { sparseCopy } from "./drivers/qemu.ts";
import type { SavedStateMeta, VmmKind } from "./drivers/types.ts";
import { liveHandle } from "./instant.ts";
import { dirOf, makeHostKey } from "./start-stop.ts";
import { parseSize } from "../units.ts";
import { allocateRow, resolveArtifacts, type CreateCtx } from "./create.ts";
import { forkSteps, removeCopy } from "./fork.ts";
import type { Mutex } from "./locks.ts";
import { faultPoint, runSteps } from "./steps.ts";

/** What a golden is kept for; a create with the same values can start from it. */
export interface WarmKeyParts {
  image: string;
  imageFingerprint: string;
  kernel: string;
  kernelSha256: string;
  cpus: number;
  memoryMib: number;
  vmm: VmmKind;
}

/** One golden as listed by `banger cache list`. */
export interface GoldenInfo extends WarmKeyParts {
  /** Its work disk's size: the smallest --disk it serves (larger ones are grown online). */
  diskBytes: number;
  key: string;
  saved: SavedStateMeta;
  createdAt: string;
  usedAt: string;
  /** Bytes on disk (allocated blocks, so sparse files count what they hold). */
  bytes: number;
}

const FILES = ["overlay", "work", "config", "state", "memory"] as const;

/** Golden directories being written by this daemon; any other unfinished one was left by a crash. */
const making = new Set<string>();

export function warmKey(p: WarmKeyParts): string {
  const text = [p.image, p.imageFingerprint, p.kernel, p.kernelSha256, p.cpus, p.memoryMib, p.vmm].join("\n");
  return createHash("sha256").update(text).digest("hex").slice(0, 20);
}

export function keyParts(image: ImageRow, kernel: KernelRow, cpus: number, memoryMib: number, vmm: VmmKind): WarmKeyParts {
  return { image: image.name, imageFingerprint: image.fingerprint, kernel: kernel.name, kernelSha256: kernel.sha256, cpus, memoryMib, vmm };
}

/** Why a golden with a `golden`-byte work disk cannot serve a `wanted`-byte one, or null when it can (growing it). */
export function diskMismatch(golden: number, wanted: number): string | null {
  if (!Number.isSafeInteger(golden) || golden <= 0) return "the golden does not record its disk size";
  if (wanted < golden) return `the golden's disk (${golden} bytes) is larger than the ${wanted} asked for, and ext4 does not shrink online`;
  if (wanted % 512 !== 0) return `${wanted} bytes is not a whole number of 512-byte sectors`;
  return null;
}

export function warmRoot(deps: VmServiceDeps): string {
  return join(deps.paths.cacheDir, "warm");
}

function goldenDir(deps: VmServiceDeps, key: string): string {
  return join(warmRoot(deps), key);
}

function allocated(path: string): number {
  try {
    return statSync(path).blocks * 512;
  } catch {
    return 0;
  }
}

function readGolden(dir: string): GoldenInfo | null {
  try {
    const info = JSON.parse(readFileSync(join(dir, "golden.json"), "utf8")) as GoldenInfo;
    if (!FILES.every((f) => existsSync(join(dir, f)))) return null;
    return { ...info, bytes: FILES.reduce((n, f) => n + allocated(join(dir, f)), 0) };
  } catch {
    return null;
  }
}

/** Complete goldens, most recently used first. */
export function listGoldens(deps: VmServiceDeps): GoldenInfo[] {
  const root = warmRoot(deps);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((n) => !n.startsWith("."))
    .flatMap((n) => readGolden(join(root, n)) ?? [])
    .sort((a, b) => b.usedAt.localeCompare(a.usedAt));
}

/** Why a golden can no longer be used (its image or kernel changed or went away), or null. */
export function staleReason(deps: VmServiceDeps, g: GoldenInfo): string | null {
  const image = deps.artifacts.image(g.image);
  if (!image) return `image ${g.image} is gone`;
  if (image.fingerprint !== g.imageFingerprint) return `image ${g.image} changed`;
  const kernel = deps.artifacts.kernel(g.kernel);
  if (!kernel) return `kernel ${g.kernel} is gone`;
  if (kernel.sha256 !== g.kernelSha256) return `kernel ${g.kernel} changed`;
  if (warmKey(g) !== g.key) return "made by an older banger (its key changed)";
  return null;
}

/**
 * Removes stale goldens, unfinished ones, and the least recently used beyond `warm_cache`
 * (everything with `all`). Returns what was removed.
 */
export function pruneGoldens(deps: VmServiceDeps, opts: { all?: boolean } = {}): { key: string; reason: string }[] {
  const root = warmRoot(deps);
  if (!existsSync(root)) return [];
  const removed: { key: string; reason: string }[] = [];
  const complete = new Set<string>();
  let kept = 0;
  for (const g of listGoldens(deps)) {
    complete.add(g.key);
    const reason = opts.all ? "pruned" : (staleReason(deps, g) ?? (kept >= deps.config.warm_cache ? `over warm_cache = ${deps.config.warm_cache}` : null));
    if (reason) {
      rmSync(goldenDir(deps, g.key), { recursive: true, force: true });
      removed.push({ key: g.key, reason });
    } else kept++;
  }
  for (const key of dropUnfinishedGoldens(deps, { complete })) removed.push({ key, reason: "unfinished" });
  return removed;
}

/**
 * Removes what is in the cache directory but no complete golden and not being written now: a
 * golden a crash cut short, or one whose files went missing. Returns the names removed.
 */
export function dropUnfinishedGoldens(deps: VmServiceDeps, opts: { complete?: Set<string>; inProgress?: Set<string> } = {}): string[] {
  const root = warmRoot(deps);
  if (!existsSync(root)) return [];
  const complete = opts.complete ?? new Set(listGoldens(deps).map((g) => g.key));
  const inProgress = opts.inProgress ?? making;
  const dropped = readdirSync(root).filter((n) => !complete.has(n) && !inProgress.has(n));
  for (const n of dropped) rmSync(join(root, n), { recursive: true, force: true });
  return dropped;
}

/**
 * A usable golden for this key and work-disk size, or null (none, stale, a larger disk than asked
 * for, or saved by a VMM build this host cannot load).
 */
export async function findGolden(deps: VmServiceDeps, parts: WarmKeyParts, diskBytes: number): Promise<GoldenInfo | null> {
  if (deps.config.warm_cache <= 0 || deps.drivers(parts.vmm).forkProblem()) return null;
  const g = readGolden(goldenDir(deps, warmKey(parts)));
  if (!g || staleReason(deps, g) || diskMismatch(g.diskBytes, diskBytes)) return null;
  if (await deps.drivers(parts.vmm).restoreProblem(g.saved)) return null;
  return g;
}

/** Copies a golden's files into a new VM's directory (RAM file hard-linked where it can be: it is mapped privately). */
export async function copyGoldenInto(deps: VmServiceDeps, g: GoldenInfo, vm: VmRow): Promise<void> {
  const src = goldenDir(deps, g.key);
  const d = dirOf(deps, vm.id);
  mkdirSync(d.dir, { recursive: true, mode: 0o700 });
  // Side by side: each is one `cp` of a sparse file (or a reflink), so they overlap well.
  await Promise.all([
    sparseCopy(join(src, "overlay"), d.overlay),
    sparseCopy(join(src, "work"), d.workDisk),
    sparseCopy(join(src, "config"), d.configDrive),
    sparseCopy(join(src, "state"), d.savedState),
  ]);
  try {
    linkSync(join(src, "memory"), d.memory);
  } catch {
    await sparseCopy(join(src, "memory"), d.memory);
  }
  writeFileSync(join(src, "golden.json"), JSON.stringify({ ...g, bytes: undefined, usedAt: new Date().toISOString() }, null, 2));
}

/**
 * Keeps a golden for a freshly created VM when there is none for its key. The VM is paused while
 * its state and disks are copied, then runs on. Never throws: warm start is an optimisation.
 */
export async function keepGolden(deps: VmServiceDeps, rt: Runtime, vm: VmRow): Promise<string> {
  if (deps.config.warm_cache <= 0) return "warm start is off (warm_cache = 0)";
  const driver = deps.drivers(vm.vmm);
  const problem = driver.forkProblem();
  if (problem) return `no golden: ${problem}`;
  const image = deps.artifacts.image(vm.image);
  const kernel = deps.artifacts.kernel(vm.kernel);
  if (!image || !kernel || vm.state !== "running") return "no golden: the VM is not running";
  const parts = keyParts(image, kernel, vm.cpus, vm.memory_mib, vm.vmm);
  const key = warmKey(parts);
  const kept = readGolden(goldenDir(deps, key));
  // A smaller disk's golden replaces a larger one: it serves every size the larger one did.
  if (kept && !staleReason(deps, kept) && kept.diskBytes <= vm.disk_bytes) return "golden already kept";
  const tmpName = `.${key}.${randomBytes(4).toString("hex")}.tmp`;
  const tmp = join(warmRoot(deps), tmpName);
  mkdirSync(tmp, { recursive: true, mode: 0o700 });
  making.add(tmpName);
  try {
    const saved = await freezeGolden(deps, rt, vm, tmp);
    const now = new Date().toISOString();
    writeFileSync(join(tmp, "golden.json"), JSON.stringify({ ...parts, diskBytes: vm.disk_bytes, key, saved, createdAt: now, usedAt: now }, null, 2));
    rmSync(goldenDir(deps, key), { recursive: true, force: true });
    renameSync(tmp, goldenDir(deps, key));
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    return `no golden: ${(err as Error).message}`;
  } finally {
    making.delete(tmpName);
  }
  pruneGoldens(deps);
  return `golden ${key} kept`;
}

async function freezeGolden(deps: VmServiceDeps, rt: Runtime, vm: VmRow, to: string): Promise<SavedStateMeta> {
  const driver = deps.drivers(vm.vmm);
  const handle = liveHandle(rt, deps, vm);
  const src = dirOf(deps, vm.id);
  try {
    const saved = await driver.snapshot(handle, { state: join(to, "state"), memory: join(to, "memory") }, src.memory);
    await faultPoint(deps, "golden freeze");
    await sparseCopy(src.overlay, join(to, "overlay"));
    await sparseCopy(src.workDisk, join(to, "work"));
    await sparseCopy(src.configDrive, join(to, "config"));
    return saved;
  } finally {
    await driver.resume(handle);
  }
}

/**
 * `vm create` from a golden: a private copy restored and re-identified, or null when there is no
 * usable golden (or restoring it failed; the half-made VM is removed and the caller boots cold).
 */
export async function warmCreate(deps: VmServiceDeps, rt: Runtime, allocLock: Mutex, params: VmCreateInput, call: CallContext): Promise<VmRow | null> {
  if (params.start === false || deps.config.warm_cache <= 0) return null;
  const name = params.image ?? deps.config.default_image;
  if (!deps.artifacts.image(name)) return null;
  const { image, kernel } = resolveArtifacts(deps, params.image, params.kernel);
  const parts = keyParts(image, kernel, params.cpus ?? deps.config.cpus, params.memory ?? deps.config.memory, deps.defaultVmm());
  const diskBytes = params.disk ?? parseSize(deps.config.disk)!;
  const golden = await findGolden(deps, parts, diskBytes);
  if (!golden) return null;
  const ctx = { params, image, kernel, warnings: [] } as unknown as CreateCtx;
  await allocLock.run(async () => allocateRow(deps, ctx));
  // The copy runs while the network step sets up the TAP's rules; the restore waits for it.
  const copied = Promise.all([copyGoldenInto(deps, golden, ctx.vm), makeHostKey(deps, ctx.dir, ctx.vm.name)]);
  copied.catch(() => {});
  const steps = forkSteps(deps, rt, diskBytes > golden.diskBytes ? { growWorkTo: diskBytes } : {});
  steps.splice(
    steps.findIndex((s) => s.name === "restore"),
    0,
    { name: "warm copy", run: async () => void (await copied) },
  );
  try {
    await runSteps(steps, ctx, {
      progress: call.progress,
      signal: call.signal,
      log: deps.log,
      failAt: deps.failAt?.(),
      pauseAt: deps.pauseAt?.(),
    });
  } catch (err) {
    await copied.catch(() => {});
    await removeCopy(deps, rt, ctx.vm);
    if (call.signal.aborted) throw err;
    call.progress({ stage: "warning", status: "info", message: `warm start failed (${(err as Error).message}); booting cold` });
    return null;
  }
  rmSync(ctx.dir.savedState, { force: true });
  return deps.vms.get(ctx.vm.id)!;
}
