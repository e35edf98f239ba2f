import { BangerError } from "../errors.ts";
import type { ProgressEvent } from "./model.ts";

/** One named boot step and how to undo it. */
export interface Step<C> {
  name: string;
  run(ctx: C, signal: AbortSignal): Promise<void>;
  undo?(ctx: C): Promise<void>;
}

/**
 * Runs steps in order, reporting each with its time. The first failure (or a cancel) stops
 * the list and undoes the completed steps in reverse, so nothing is left behind.
 */
export async function runSteps<C>(
  steps: Step<C>[],
  ctx: C,
  opts: { progress(e: ProgressEvent): void; signal: AbortSignal; log(msg: string): void; failAt?: string; pauseAt?: string; beforeUndo?: () => void },
): Promise<void> {
  const done: Step<C>[] = [];
  for (const step of steps) {
    const started = performance.now();
    opts.progress({ stage: step.name, status: "start" });
    try {
      if (opts.pauseAt === step.name) await pauseUntilAborted(step.name, opts);
      if (opts.signal.aborted) throw new BangerError("cancelled", "cancelled by the user");
      if (opts.failAt === step.name) throw new BangerError("internal", `injected failure at ${step.name}`);
      // Pushed before it runs: a step that fails halfway is undone too, so undo must be idempotent.
      done.push(step);
      await step.run(ctx, opts.signal);
      if (opts.signal.aborted) throw new BangerError("cancelled", "cancelled by the user");
      const elapsedMs = Math.round(performance.now() - started);
      opts.log(`step ${step.name} ${elapsedMs}ms`);
      opts.progress({ stage: step.name, status: "done", elapsedMs });
    } catch (err) {
      const elapsedMs = Math.round(performance.now() - started);
      opts.progress({ stage: step.name, status: "failed", elapsedMs, message: (err as Error).message });
      opts.log(
        `step ${step.name} failed after ${elapsedMs}ms: ${(err as Error).message}; undoing ${
          done
            .map((s) => s.name)
            .reverse()
            .join(", ") || "nothing"
        }`,
      );
      opts.beforeUndo?.();
      await undoAll(done, ctx, opts.log);
      throw err;
    }
  }
}

/** Test seam: holds the list before a step until the call is cancelled, so a crash lands there deterministically. */
async function pauseUntilAborted(name: string, opts: { signal: AbortSignal; log(msg: string): void }) {
  opts.log(`paused at ${name}`);
  if (opts.signal.aborted) return;
  await new Promise<void>((resolve) => opts.signal.addEventListener("abort", () => resolve(), { once: true }));
}

/** The fault knobs of a service, read once per operation (see VmServiceDeps.failAt / pauseAt). */
export interface FaultKnobs {
  failAt?: () => string | undefined;
  pauseAt?: () => string | undefined;
  log(msg: string): void;
}

/**
 * Test seam for a named point outside a step list (inside suspend, fork, warm start): fails there,
 * or holds there (until `signal` aborts, else for good) so a test can kill the daemon at that point.
 */
export async function faultPoint(knobs: FaultKnobs, name: string, signal?: AbortSignal): Promise<void> {
  if (knobs.pauseAt?.() === name) {
    await pauseUntilAborted(name, { signal: signal ?? new AbortController().signal, log: knobs.log });
    throw new BangerError("cancelled", "cancelled by the user");
  }
  if (knobs.failAt?.() === name) throw new BangerError("internal", `injected failure at ${name}`);
}

async function undoAll<C>(done: Step<C>[], ctx: C, log: (m: string) => void) {
  for (const step of [...done].reverse()) {
    try {
      await step.undo?.(ctx);
    } catch (err) {
      log(`undo ${step.name} failed: ${(err as Error).message}`);
    }
  }
}
