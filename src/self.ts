/** This program, as the other modes and the workers see it. */

/** The argv that runs this same program in another mode (compiled binary or `bun src/main.ts`). */
export function selfArgv(): string[] {
  const compiled = import.meta.url.includes("$bunfs") || Bun.main.startsWith("/$bunfs");
  return compiled ? [process.execPath] : [process.execPath, Bun.main];
}

/** What a daemon logs when it finds another daemon already running. */
export const LOCK_HELD_LINE = "another daemon holds the lock; exiting";
