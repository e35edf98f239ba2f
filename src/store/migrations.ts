import type { Database } from "bun:sqlite";

/** One numbered, append-only schema step. Ids are never reused. */
export interface Migration {
  id: number;
  name: string;
  up(db: Database): void;
}

/** Every migration this build knows, in order. */
export const MIGRATIONS: Migration[] = [
  {
    id: 1,
    name: "baseline",
    up(db) {
      db.run(`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`);
    },
  },
  {
    id: 2,
    name: "kernels_images",
    up(db) {
      db.run(`CREATE TABLE kernels (
        name TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL
      )`);
      db.run(`CREATE TABLE images (
        name TEXT PRIMARY KEY,
        rootfs_path TEXT NOT NULL,
        work_seed_path TEXT NOT NULL,
        kernel TEXT,
        agent_version TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL
      )`);
    },
  },
  {
    id: 3,
    name: "vms",
    up(db) {
      db.run(`CREATE TABLE vms (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        image TEXT NOT NULL,
        kernel TEXT NOT NULL,
        vmm TEXT NOT NULL,
        cpus INTEGER NOT NULL,
        memory_mib INTEGER NOT NULL,
        disk_bytes INTEGER NOT NULL,
        nat INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        desired_state TEXT NOT NULL,
        ip TEXT NOT NULL UNIQUE,
        mac TEXT NOT NULL UNIQUE,
        cid INTEGER NOT NULL UNIQUE,
        tap TEXT NOT NULL,
        teardown TEXT NOT NULL DEFAULT '{}',
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        started_at TEXT
      )`);
    },
  },
  {
    id: 4,
    name: "vm_net_policy",
    up(db) {
      // The policy replaces the nat flag (kept in step for older readers): nat → "nat", else "none".
      db.run(`ALTER TABLE vms ADD COLUMN net TEXT NOT NULL DEFAULT 'none'`);
      db.run(`UPDATE vms SET net = 'nat' WHERE nat = 1`);
      db.run(`ALTER TABLE vms ADD COLUMN net_group TEXT NOT NULL DEFAULT ''`);
    },
  },
  {
    id: 5,
    name: "kernel_initrd",
    up(db) {
      db.run(`ALTER TABLE kernels ADD COLUMN initrd_path TEXT`);
    },
  },
];
