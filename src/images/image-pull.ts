/**
 * Image catalog pulls. An entry's url serves a tar (plain or zstd) holding `rootfs.ext4`,
 * `work-seed.ext4` and `image.json` ({agent_version, kernel?}); its sha256 is checked before
 * anything is unpacked, and a failed pull leaves nothing behind.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { BangerError } from "../errors.ts";
import type { Runner } from "../host/runner.ts";
import { downloadVerified, fetchCatalog, findEntry, type Fetch } from "./catalog.ts";

export interface PulledImage {
  name: string;
  rootfs: string;
  workSeed: string;
  agentVersion: string;
  kernel: string | null;
  sha256: string;
  sizeBytes: number;
}

const MEMBERS = ["rootfs.ext4", "work-seed.ext4", "image.json"];

/** Downloads an image named in the catalog into <imagesDir>/<name>/, verified. */
export async function pullImage(o: { catalogUrl: string; name: string; imagesDir: string; fetch: Fetch; runner: Runner }): Promise<PulledImage> {
  const entry = findEntry(await fetchCatalog(o.catalogUrl, o.fetch), o.name, "image");
  const dest = join(o.imagesDir, entry.name);
  if (existsSync(dest))
    throw new BangerError("already_exists", `image ${entry.name} already exists`, { hint: `Delete it first: banger image delete ${entry.name}` });
  const work = join(o.imagesDir, `.pull-${randomBytes(6).toString("hex")}`);
  try {
    await mkdir(work, { recursive: true });
    const archive = join(work, "image.tar");
    await downloadVerified({ url: entry.url, sha256: entry.sha256, size: entry.size, dest: archive, fetch: o.fetch });
    const list = (await o.runner.run(["tar", "-tf", archive])).stdout
      .split("\n")
      .filter(Boolean)
      .map((m) => m.replace(/^\.\//, ""));
    const unexpected = list.filter((m) => !MEMBERS.includes(m) && m !== "." && m !== "./");
    if (unexpected.length || !MEMBERS.every((m) => list.includes(m))) {
      throw new BangerError("invalid_argument", `image archive for ${entry.name} must hold exactly ${MEMBERS.join(", ")}; it holds ${list.join(", ")}`, {
        hint: "Fix the catalog's image archive.",
      });
    }
    const out = join(work, "out");
    await mkdir(out);
    await o.runner.run(["tar", "-xf", archive, "-C", out, "--no-same-owner", "--sparse", ...MEMBERS]);
    const meta = JSON.parse(await readFile(join(out, "image.json"), "utf8")) as { agent_version?: string; kernel?: string };
    await rm(join(out, "image.json"));
    await rename(out, dest);
    return {
      name: entry.name,
      rootfs: join(dest, "rootfs.ext4"),
      workSeed: join(dest, "work-seed.ext4"),
      agentVersion: meta.agent_version ?? "unknown",
      kernel: meta.kernel ?? null,
      sha256: entry.sha256,
      sizeBytes: Bun.file(join(dest, "rootfs.ext4")).size,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
