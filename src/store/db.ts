import { Database } from "bun:sqlite";
import { closeSync, existsSync, mkdirSync, openSync, readSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { BangerError } from "../errors.ts";
import { MIGRATIONS, type Migration } from "./migrations.ts";

const SQLITE_MAGIC = "SQLite format 3\0";

/** Opens state.db read-write, creating it and applying migrations; refuses a corrupt file without touching it. */
export function openStore(path: string, migrations: Migration[] = MIGRATIONS): Database {
  refuseIfNotSqlite(path);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const db = guardOpen(path, () => new Database(path, { create: true, readwrite: true, strict: true }));
  try {
    applyPragmas(db, false);
    migrate(db, migrations);
  } catch (err) {
    db.close();
    throw corrupt(path, err);
  }
  return db;
}

/** Opens state.db read-only (doctor); never creates a file; null when there is no database yet. */
/**
 * Whether the database at path has the kernel and the image registered (false for a missing
 * file); throws when the file is there but cannot be read as banger's state.
 */
export function registeredArtifacts(path: string, kernel: string, image: string): { kernel: boolean; image: boolean } {
  const db = openStoreReadOnly(path);
  const has = (table: string, name: string) => {
    try {
      return Boolean(db?.query(`SELECT 1 FROM ${table} WHERE name = ?`).get(name));
    } catch {
      return false;
    }
  };
  try {
    return { kernel: has("kernels", kernel), image: has("images", image) };
  } finally {
    db?.close();
  }
}

export function openStoreReadOnly(path: string): Database | null {
  if (!existsSync(path)) return null;
  refuseIfNotSqlite(path);
  const db = guardOpen(path, () => new Database(path, { readonly: true, strict: true }));
  try {
    applyPragmas(db, true);
    db.query("SELECT count(*) FROM sqlite_master").get();
  } catch (err) {
    db.close();
    throw corrupt(path, err);
  }
  return db;
}

function guardOpen(path: string, open: () => Database): Database {
  try {
    return open();
  } catch (err) {
    throw corrupt(path, err);
  }
}

/** Pragmas are per connection, so every open sets them. */
function applyPragmas(db: Database, readonly: boolean) {
  db.run("PRAGMA busy_timeout = 5000");
  db.run("PRAGMA foreign_keys = ON");
  if (!readonly) {
    db.run("PRAGMA journal_mode = WAL");
    db.run("PRAGMA synchronous = NORMAL");
  }
}

/** Checks the header before SQLite ever opens the file, so a foreign file is never rewritten. */
function refuseIfNotSqlite(path: string) {
  if (!existsSync(path)) return;
  const size = statSync(path).size;
  if (size === 0) return;
  const fd = openSync(path, "r");
  const head = Buffer.alloc(16);
  try {
    readSync(fd, head, 0, 16, 0);
  } finally {
    closeSync(fd);
  }
  if (size < 100 || head.toString("latin1") !== SQLITE_MAGIC) throw corrupt(path, new Error("not an SQLite database"));
}

function corrupt(path: string, err: unknown): BangerError {
  if (err instanceof BangerError) return err;
  return new BangerError("failed_precondition", `state database ${path} is unreadable: ${(err as Error).message}`, {
    hint: "banger left the file untouched. Move it aside (or restore a backup) and run the command again to start with an empty state.",
    cause: err,
  });
}

/** Applies each known migration not yet recorded; ids this build does not know are left alone. */
export function migrate(db: Database, migrations: Migration[]) {
  db.run(`CREATE TABLE IF NOT EXISTS schema_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`);
  const applied = new Set(
    db
      .query<{ id: number }, []>("SELECT id FROM schema_migrations")
      .all()
      .map((r) => r.id),
  );
  for (const m of migrations) {
    if (applied.has(m.id)) continue;
    db.transaction(() => {
      m.up(db);
      db.query("INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)").run(m.id, m.name, new Date().toISOString());
    })();
  }
}

/** The ids recorded in schema_migrations. */
export function appliedMigrations(db: Database): number[] {
  return db
    .query<{ id: number }, []>("SELECT id FROM schema_migrations ORDER BY id")
    .all()
    .map((r) => r.id);
}
