import type { Database } from "bun:sqlite";
import { insertSql } from "./sql.ts";

/** A registered guest kernel. */
export interface KernelRow {
  name: string;
  version: string;
  path: string;
  sha256: string;
  size_bytes: number;
  source: string;
  created_at: string;
  /** The initrd booted with this kernel (a distribution kernel's), else null. */
  initrd_path?: string | null;
}

/** A managed image: a read-only base rootfs plus the work seed and metadata. */
export interface ImageRow {
  name: string;
  rootfs_path: string;
  work_seed_path: string;
  kernel: string | null;
  agent_version: string;
  fingerprint: string;
  size_bytes: number;
  source: string;
  created_at: string;
}

const KERNEL_COLUMNS: (keyof KernelRow)[] = ["name", "version", "path", "sha256", "size_bytes", "source", "created_at", "initrd_path"];
const IMAGE_COLUMNS: (keyof ImageRow)[] = [
  "name",
  "rootfs_path",
  "work_seed_path",
  "kernel",
  "agent_version",
  "fingerprint",
  "size_bytes",
  "source",
  "created_at",
];

/** The kernels and images tables. */
export class ArtifactStore {
  constructor(private readonly db: Database) {}

  kernels(): KernelRow[] {
    return this.db.query<KernelRow, []>("SELECT * FROM kernels ORDER BY name").all();
  }
  kernel(name: string): KernelRow | null {
    return this.db.query<KernelRow, [string]>("SELECT * FROM kernels WHERE name = ?").get(name);
  }
  putKernel(k: KernelRow) {
    this.db.query(insertSql("kernels", KERNEL_COLUMNS, true)).run({ initrd_path: null, ...k } as never);
  }
  deleteKernel(name: string) {
    this.db.query("DELETE FROM kernels WHERE name = ?").run(name);
  }

  images(): ImageRow[] {
    return this.db.query<ImageRow, []>("SELECT * FROM images ORDER BY name").all();
  }
  image(name: string): ImageRow | null {
    return this.db.query<ImageRow, [string]>("SELECT * FROM images WHERE name = ?").get(name);
  }
  putImage(i: ImageRow) {
    this.db.query(insertSql("images", IMAGE_COLUMNS, true)).run(i as never);
  }
  deleteImage(name: string) {
    this.db.query("DELETE FROM images WHERE name = ?").run(name);
  }
}
