import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { createOverlayDisk, createWorkDisk, type DiskDeps, refuseExisting } from "./disks.ts";

/**
 * Ready-made disks to clone. Every VM's overlay is the same empty ext4 and every work disk of one
 * image and size is the same grown seed, so each is made once (mkfs, or cp + resize2fs + debugfs)
 * and a create only clones it sparsely: one `cp` instead of up to three e2fsprogs runs. The
 * clones are byte for byte what those tools would have made (the work disk already shared its
 * seed's filesystem UUID; overlays now share theirs too, and nothing mounts by UUID).
 */
export class DiskTemplates {
  /** Templates being built, by path: concurrent creates wait for one build. */
  private static readonly building = new Map<string, Promise<string>>();

  constructor(
    private readonly dir: string,
    private readonly deps: DiskDeps,
  ) {}

  /** Makes `path` an empty overlay disk of sizeBytes. */
  async overlay(path: string, sizeBytes: number): Promise<void> {
    const template = await this.template(`overlay-${sizeBytes}`, (tmp) => createOverlayDisk(tmp, sizeBytes, this.deps));
    await this.clone(template, path, "overlay disk");
  }

  /** Makes `path` the image's work seed grown to sizeBytes. */
  async workDisk(opts: { seed: string; path: string; sizeBytes: number }): Promise<void> {
    const seed = statSync(opts.seed, { throwIfNoEntry: false });
    // No seed: the plain path says so (and a missing seed is never cached).
    if (!seed) return createWorkDisk(opts, this.deps);
    const seedKey = createHash("sha256").update(opts.seed).digest("hex").slice(0, 12);
    // A rebuilt seed is a new file (size, mtime or inode change), so it gets a new template.
    const version = `${seed.size}-${Math.trunc(seed.mtimeMs)}-${seed.ino}`;
    const template = await this.template(`work-${seedKey}-${version}-${opts.sizeBytes}`, async (tmp) => {
      this.prune(`work-${seedKey}-`, `work-${seedKey}-${version}-`);
      await createWorkDisk({ ...opts, path: tmp }, this.deps);
    });
    await this.clone(template, opts.path, "work disk");
  }

  /** The template named `name`, built once (also across concurrent callers) into a temp file then renamed. */
  private template(name: string, build: (tmp: string) => Promise<void>): Promise<string> {
    const path = join(this.dir, `${name}.ext4`);
    if (existsSync(path)) return Promise.resolve(path);
    let pending = DiskTemplates.building.get(path);
    if (!pending) {
      pending = this.build(path, build).finally(() => DiskTemplates.building.delete(path));
      DiskTemplates.building.set(path, pending);
    }
    return pending;
  }

  private async build(path: string, build: (tmp: string) => Promise<void>): Promise<string> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${path}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
    try {
      await build(tmp);
      renameSync(tmp, path);
    } finally {
      rmSync(tmp, { force: true });
    }
    return path;
  }

  /** A sparse (reflinked where the filesystem can) copy of the template; a failed copy leaves no file. */
  private async clone(template: string, path: string, what: string): Promise<void> {
    await refuseExisting(path, what);
    try {
      await this.deps.runner.run(["cp", "--reflink=auto", "--sparse=always", template, path]);
    } catch (err) {
      rmSync(path, { force: true });
      throw err;
    }
  }

  /** Removes the templates of an older version of one seed (a rebuilt image leaves them unused). */
  private prune(prefix: string, keep: string): void {
    for (const f of readdirSync(this.dir)) {
      if (f.startsWith(prefix) && !f.startsWith(keep)) rmSync(join(this.dir, f), { force: true });
    }
  }
}
