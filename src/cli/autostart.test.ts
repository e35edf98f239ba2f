import { afterEach, expect, test } from "bun:test";
import { appendFileSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LOCK_HELD_LINE } from "../self.ts";
import { lostLockRace } from "./autostart.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

test("a spawned daemon that found the lock taken counts as 'one is running', but only for this run's lines", () => {
  const dir = mkdtempSync(join(tmpdir(), "banger-autostart-"));
  dirs.push(dir);
  const daemonLog = join(dir, "daemon.log");
  writeFileSync(daemonLog, `2026-01-01T00:00:00Z ${LOCK_HELD_LINE}\n`);
  const start = statSync(daemonLog).size;
  expect(lostLockRace({ daemonLog }, start)).toBe(false);
  appendFileSync(daemonLog, "2026-01-01T00:00:01Z banger: dns_listen 127.0.0.1:53 is taken\n");
  expect(lostLockRace({ daemonLog }, start)).toBe(false);
  appendFileSync(daemonLog, `2026-01-01T00:00:02Z ${LOCK_HELD_LINE}\n`);
  expect(lostLockRace({ daemonLog }, start)).toBe(true);
  expect(lostLockRace({ daemonLog: join(dir, "missing.log") }, 0)).toBe(false);
});
