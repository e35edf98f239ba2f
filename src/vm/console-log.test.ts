import { afterAll, expect, test } from "bun:test";
import { appendFileSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConsoleCap, rotateAt, rotateIfOver } from "./console-log.ts";

const dir = mkdtempSync(join(tmpdir(), "banger-console-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("rotates past half the cap: .1 keeps the newest bytes, the log starts over", () => {
  const f = join(dir, "a.log");
  writeFileSync(f, "x".repeat(500));
  expect(rotateIfOver(f, 1000)).toBe(false);
  appendFileSync(f, "y".repeat(800));
  expect(rotateIfOver(f, 1000)).toBe(true);
  expect(statSync(f).size).toBe(0);
  const old = readFileSync(`${f}.1`, "utf8");
  expect(old).toHaveLength(1000); // the newest cap's worth of 1300 bytes
  expect(old.endsWith("y".repeat(800))).toBe(true);
  expect(rotateIfOver(join(dir, "missing"), 1000)).toBe(false);
});

test("an appending writer continues at the start after a rotation", () => {
  const f = join(dir, "b.log");
  const fd = openSync(f, "a");
  writeSync(fd, "z".repeat(600));
  rotateIfOver(f, 1000);
  writeSync(fd, "after\n");
  closeSync(fd);
  expect(readFileSync(f, "utf8")).toBe("after\n");
});

test("a watched console is rotated by its watcher as a writer appends, with no poll", async () => {
  const f = join(dir, "c.log");
  writeFileSync(f, "");
  const cap = new ConsoleCap(256 * 1024);
  cap.track(new Map([["vm1", f]]));
  const fd = openSync(f, "a");
  let rotations = 0;
  const chunk = Buffer.alloc(16 * 1024, 0x41);
  try {
    for (let i = 0; i < 64; i++) {
      writeSync(fd, chunk);
      if (statSync(f).size <= rotateAt(256 * 1024)) continue;
      // Past the threshold: the watcher alone must bring it back (bounded wait, no timing assertion).
      for (let t = 0; t < 2000 && statSync(f).size > rotateAt(256 * 1024); t++) await Bun.sleep(5);
      expect(statSync(f).size).toBeLessThanOrEqual(rotateAt(256 * 1024));
      rotations++;
    }
  } finally {
    closeSync(fd);
    cap.close();
  }
  expect(rotations).toBeGreaterThanOrEqual(3);
  expect(statSync(`${f}.1`).size).toBeLessThanOrEqual(256 * 1024);
  expect(rotateAt(256 * 1024)).toBe(128 * 1024);
}, 60_000);
