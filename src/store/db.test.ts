import { afterEach, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { appliedMigrations, openStore, openStoreReadOnly } from "./db.ts";
import { MIGRATIONS } from "./migrations.ts";

let dir: string;
afterEach(() => rmSync(dir, { recursive: true, force: true }));
const fresh = () => (dir = mkdtempSync(join(tmpdir(), "banger-store-")));

describe("store", () => {
  test("migrations apply once and are idempotent across reopen", () => {
    const path = join(fresh(), "state.db");
    const db = openStore(path);
    expect(appliedMigrations(db)).toEqual(MIGRATIONS.map((m) => m.id));
    db.close();
    const again = openStore(path);
    expect(appliedMigrations(again)).toEqual(MIGRATIONS.map((m) => m.id));
    expect(again.query<{ n: number }, []>("SELECT count(*) AS n FROM schema_migrations").get()!.n).toBe(MIGRATIONS.length);
    again.close();
  });

  test("pragmas are set on every connection", () => {
    const db = openStore(join(fresh(), "state.db"));
    expect(db.query<{ journal_mode: string }, []>("PRAGMA journal_mode").get()!.journal_mode).toBe("wal");
    expect(db.query<{ foreign_keys: number }, []>("PRAGMA foreign_keys").get()!.foreign_keys).toBe(1);
    expect(db.query<{ timeout: number }, []>("PRAGMA busy_timeout").get()!.timeout).toBe(5000);
    db.close();
  });

  test("an unknown applied id (a newer build ran) is left alone and known ones still apply", () => {
    const path = join(fresh(), "state.db");
    const raw = new Database(path);
    raw.run("CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)");
    raw.run("INSERT INTO schema_migrations VALUES (9001, 'from_the_future', 'x')");
    raw.close();
    const db = openStore(path);
    expect(appliedMigrations(db)).toEqual([...MIGRATIONS.map((m) => m.id), 9001]);
    db.close();
  });

  test("garbage bytes are refused with a clear error and left byte-identical", () => {
    const path = join(fresh(), "state.db");
    const garbage = Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 7919) % 256));
    writeFileSync(path, garbage);
    expect(() => openStore(path)).toThrow(/state database .* is unreadable/);
    expect(() => openStoreReadOnly(path)).toThrow(/unreadable/);
    expect(Buffer.compare(readFileSync(path), garbage)).toBe(0);
    expect(readdirSync(dir)).toEqual(["state.db"]);
  });

  test("a corrupt file with a valid header is refused and untouched", () => {
    const path = join(fresh(), "state.db");
    const bytes = Buffer.alloc(4096, 0xab);
    bytes.write("SQLite format 3\0", 0, "latin1");
    writeFileSync(path, bytes);
    expect(() => openStore(path)).toThrow(/unreadable/);
    expect(Buffer.compare(readFileSync(path), bytes)).toBe(0);
  });

  test("read-only open with no database creates nothing", () => {
    const path = join(fresh(), "sub", "state.db");
    expect(openStoreReadOnly(path)).toBeNull();
    expect(existsSync(join(dir, "sub"))).toBe(false);
  });
});
