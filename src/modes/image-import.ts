import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { BangerError } from "../errors.ts";
import { makeWorkSeed } from "../images/disks.ts";
import { glueEntries, type GlueEntry } from "../images/glue/index.ts";
import { importOci, type ExtraEntry } from "../images/oci/import.ts";
import { agentVersionOf } from "../images/build.ts";
import type { Runner } from "../host/runner.ts";
import type { ImageRow } from "../store/artifacts.ts";

/** Glue entries in the OCI importer's shape. */
async function asExtraEntries(entries: GlueEntry[]): Promise<ExtraEntry[]> {
  return Promise.all(
    entries.map(async (e): Promise<ExtraEntry> => {
      if (e.kind === "dir") return { path: e.path, type: "dir", mode: e.mode };
      if (e.kind === "symlink") return { path: e.path, type: "symlink", target: e.target };
      const content = e.content instanceof Blob ? new Uint8Array(await e.content.arrayBuffer()) : e.content;
      return { path: e.path, type: "file", content, mode: e.mode };
    }),
  );
}

/** Imports an OCI image (layout dir, docker save or oci-archive tarball) as a managed image with banger's glue and agent. */
export async function importImage(o: { source: string; name: string; kernel: string | null; imagesDir: string; agentBinary: string; runner: Runner; progress(line: string): void }): Promise<ImageRow> {
  const dir = join(o.imagesDir, o.name);
  // the first import on a fresh state directory: nothing has made imagesDir yet
  mkdirSync(o.imagesDir, { recursive: true });
  const work = mkdtempSync(join(o.imagesDir, `.import-${o.name}-`));
  mkdirSync(dir, { recursive: true });
  try {
    const version = await agentVersionOf(o.agentBinary, o.runner);
    const extra = await asExtraEntries(glueEntries({ binary: o.agentBinary, version }));
    const source = o.source.startsWith("registry://") ? o.source : resolve(o.source);
    const r = await importOci({ source, outPath: join(dir, "rootfs.ext4"), extraEntries: extra, workDir: work, runner: o.runner, onProgress: o.progress });
    const emptyRoot = join(work, "root");
    mkdirSync(emptyRoot, { recursive: true });
    const seed = join(dir, "work-seed.ext4");
    await makeWorkSeed({ srcDir: emptyRoot, path: seed }, { runner: o.runner });
    return { name: o.name, rootfs_path: r.rootfs, work_seed_path: seed, kernel: o.kernel, agent_version: version, fingerprint: r.digest, size_bytes: r.sizeBytes, source: `oci:${o.source}`, created_at: new Date().toISOString() };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    if (err instanceof BangerError) throw err;
    throw new BangerError("internal", `importing ${o.source} failed: ${(err as Error).message}`, { cause: err });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
