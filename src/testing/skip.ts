import { test } from "bun:test";
import { existsSync } from "node:fs";
import { resolve } from "node:path";

/** The project root (where package.json lives). */
export const projectRoot = resolve(import.meta.dir, "../..");

/** The read-only shared fixtures directory beside the project. */
export const sharedDir = resolve(projectRoot, "../shared");

/** Where tests cache expensive fixtures (decompressed kernel, test rootfs); gitignored. */
export const testCacheDir = resolve(projectRoot, ".test-cache");

export const inCI = process.env.CI === "true";

/**
 * Returns why a test cannot run here, or null when it can. Under CI=true a missing
 * prerequisite is a failure, never a skip.
 */
export function missing(checks: Array<[boolean, string]>): string | null {
  const reasons = checks.filter(([ok]) => !ok).map(([, why]) => why);
  return reasons.length ? reasons.join("; ") : null;
}

/**
 * A test that needs something from the machine (root, qemu, a booted guest). Skips with
 * the reason printed when it is missing, except under CI where it fails.
 */
export function testNeeds(name: string, checks: Array<[boolean, string]>, fn: () => Promise<void> | void, timeoutMs?: number) {
  const why = missing(checks);
  if (why && !inCI) {
    test.skip(`${name} (skipped: ${why})`, () => {});
    console.warn(`skip: ${name}: ${why}`);
    return;
  }
  test(
    name,
    async () => {
      if (why) throw new Error(`prerequisite missing under CI: ${why}`);
      await fn();
    },
    timeoutMs ?? 120_000,
  );
}

export const isRoot = process.getuid?.() === 0;

/** True when an executable is on PATH. */
export function hasBin(name: string): boolean {
  return Bun.which(name) !== null;
}

export function hasFile(path: string): boolean {
  return existsSync(path);
}
