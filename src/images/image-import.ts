import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { BangerError } from "../errors.ts";
import { makeWorkSeed } from "./disks.ts";
import type { ImportLimits } from "./oci/unpack.ts";
import { selfArgv } from "../self.ts";
import { importInWorker } from "./import-worker.ts";
import { agentVersionOf } from "./build.ts";
import type { Runner } from "../host/runner.ts";
import type { ImageRow } from "../store/artifacts.ts";

/** Imports an OCI image (layout dir, docker save or oci-archive tarball) as a managed image with banger's glue and agent. */
export async function importImage(o: {
  source: string;
  name: string;
  kernel: string | null;
  modulesFrom?: { rootfs: string; release: string };
  imagesDir: string;
  agentBinary: string;
  runner: Runner;
  limits: ImportLimits;
  progress(line: string): void;
  signal?: AbortSignal;
  workerArgv?: string[];
}): Promise<ImageRow> {
  const dir = join(o.imagesDir, o.name);
  // the first import on a fresh state directory: nothing has made imagesDir yet
  mkdirSync(o.imagesDir, { recursive: true });
  const work = mkdtempSync(join(o.imagesDir, `.import-${o.name}-`));
  mkdirSync(dir, { recursive: true });
  try {
    const version = await agentVersionOf(o.agentBinary, o.runner);
    const source = o.source.startsWith("registry://") ? o.source : resolve(o.source);
    const job = {
      source,
      outPath: join(dir, "rootfs.ext4"),
      workDir: work,
      agentBinary: o.agentBinary,
      agentVersion: version,
      limits: o.limits,
      modulesFrom: o.modulesFrom,
    };
    const r = await importInWorker(o.workerArgv ?? selfArgv(), job, o.progress, o.signal);
    const emptyRoot = join(work, "root");
    mkdirSync(emptyRoot, { recursive: true });
    const seed = join(dir, "work-seed.ext4");
    await makeWorkSeed({ srcDir: emptyRoot, path: seed }, { runner: o.runner });
    return {
      name: o.name,
      rootfs_path: r.rootfs,
      work_seed_path: seed,
      kernel: o.kernel,
      agent_version: version,
      fingerprint: r.digest,
      size_bytes: r.sizeBytes,
      source: `oci:${o.source}`,
      created_at: new Date().toISOString(),
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    if (err instanceof BangerError) throw err;
    throw new BangerError("internal", `importing ${o.source} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
