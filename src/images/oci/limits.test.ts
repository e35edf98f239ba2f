import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RecordingRunner } from "../../testing/recording-runner.ts";
import { writeTar } from "../tar.ts";
import { gzipBombLayer, negativeSizeTar, writeRawLayout } from "../../testing/oci-fixtures.ts";
import { importOci } from "./import.ts";

const base = mkdtempSync(join(tmpdir(), "banger-oci-limits-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));
let n = 0;

/** Imports a crafted one-image layout; the runner records (never runs) the ext4 tools. */
async function importRaw(blobs: Uint8Array[], limits = { maxBytes: 1 << 30, maxEntries: 1000 }) {
  const dir = join(base, `img-${n++}`);
  const work = join(dir, "work");
  mkdirSync(work, { recursive: true });
  writeRawLayout(join(dir, "layout"), blobs);
  const run = importOci({ source: join(dir, "layout"), outPath: join(dir, "out.ext4"), workDir: work, runner: new RecordingRunner(), limits });
  return { run, work };
}

test("a 1.5 KB tar with a negative size is refused at once, naming the header", async () => {
  const tar = negativeSizeTar();
  expect(tar.length).toBeLessThanOrEqual(1536);
  const { run, work } = await importRaw([tar]);
  await expect(run).rejects.toThrow(/layer 1\/1 .*size field of the header at byte 0 is "-0001000"/);
  expect(readdirSync(work)).toEqual([]);
});

test("a gzip bomb is refused at the byte cap while streaming, leaving no scratch files", async () => {
  const bomb = gzipBombLayer(512);
  expect(bomb.length).toBeLessThan(1 << 20);
  const { run, work } = await importRaw([bomb], { maxBytes: 8 << 20, maxEntries: 1000 });
  await expect(run).rejects.toThrow(/layer 1\/1 .* unpacks to more than the import cap of 8 MiB/);
  expect(readdirSync(work)).toEqual([]);
});

test("the entry cap counts all layers and names the first entry past it", async () => {
  const layer = (p: string) => writeTar(Array.from({ length: 6 }, (_, i) => ({ path: `${p}${i}`, data: "x" })));
  const { run } = await importRaw([layer("a"), layer("b")], { maxBytes: 1 << 30, maxEntries: 10 });
  await expect(run).rejects.toThrow(/layer 2\/2 .*entry "b4" is past the import cap of 10 entries/);
});

test("an entry with thousands of extended attributes is refused, naming it", async () => {
  const xattrs = Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`user.a${i}`, new Uint8Array([1])]));
  const { run } = await importRaw([writeTar([{ path: "many", data: "x", xattrs }])]);
  await expect(run).rejects.toThrow(/entry "many" has 2000 extended attributes; the most an entry may carry is 64/);
});
