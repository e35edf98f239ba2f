import { BangerError } from "../errors.ts";
import type { ProgressEvent } from "./model.ts";

/** One named boot step and how to undo it. */
export interface Step<C> {
  name: string;
  run(ctx: C, signal: AbortSignal): Promise<void>;
  undo?(ctx: C): Promise<void>;
}

/** Steps that run side by side: each lane in order, the lanes at once (see runSteps). */
export interface Together<C> {
  together: Step<C>[][];
}

/** One entry of a step list: a step, or lanes of steps run side by side. */
export type StepEntry<C> = Step<C> | Together<C>;

/** The step names of a list, in list order. */
export function stepNames<C>(entries: StepEntry<C>[]): string[] {
  return entries.flatMap((e) => ("together" in e ? e.together.flat() : [e])).map((s) => s.name);
}

type RunOpts = { progress(e: ProgressEvent): void; signal: AbortSignal; log(msg: string): void; failAt?: string; pauseAt?: string; beforeUndo?: () => void };
type Outcome = { ok: true; ms: number } | { ok: false; ms: number; err: unknown };

/**
 * Runs steps in order, reporting each with its time. The first failure (or a cancel) stops
 * the list and undoes the completed steps in reverse, so nothing is left behind. The lanes of
 * a `together` entry run at once; their steps are reported done in list order, and a failure
 * in one lane lets the others finish before everything is undone (the first failure in list
 * order is the one thrown).
 */
export async function runSteps<C>(entries: StepEntry<C>[], ctx: C, opts: RunOpts): Promise<void> {
  const done: Step<C>[] = [];
  for (const entry of entries) {
    const lanes = "together" in entry ? entry.together : [[entry]];
    const outcomes = new Map<Step<C>, Outcome>();
    await Promise.all(lanes.map((lane) => runLane(lane, ctx, opts, done, outcomes)));
    let failure: { err: unknown } | undefined;
    for (const step of lanes.flat()) {
      const o = outcomes.get(step);
      if (!o) continue;
      if (o.ok) {
        opts.log(`step ${step.name} ${o.ms}ms`);
        opts.progress({ stage: step.name, status: "done", elapsedMs: o.ms });
        continue;
      }
      const message = (o.err as Error).message;
      opts.progress({ stage: step.name, status: "failed", elapsedMs: o.ms, message });
      if (failure) continue;
      failure = { err: o.err };
      const undoing =
        done
          .map((s) => s.name)
          .reverse()
          .join(", ") || "nothing";
      opts.log(`step ${step.name} failed after ${o.ms}ms: ${message}; undoing ${undoing}`);
    }
    if (failure) {
      opts.beforeUndo?.();
      await undoAll(done, ctx, opts.log);
      throw failure.err;
    }
  }
}

/** Runs one lane's steps in order until one fails, recording each outcome. */
async function runLane<C>(lane: Step<C>[], ctx: C, opts: RunOpts, done: Step<C>[], outcomes: Map<Step<C>, Outcome>): Promise<void> {
  for (const step of lane) {
    const started = performance.now();
    const ms = () => Math.round(performance.now() - started);
    opts.progress({ stage: step.name, status: "start" });
    try {
      if (opts.pauseAt === step.name) await pauseUntilAborted(step.name, opts);
      if (opts.signal.aborted) throw new BangerError("cancelled", "cancelled by the user");
      if (opts.failAt === step.name) throw new BangerError("internal", `injected failure at ${step.name}`);
      // Pushed before it runs: a step that fails halfway is undone too, so undo must be idempotent.
      done.push(step);
      await step.run(ctx, opts.signal);
      if (opts.signal.aborted) throw new BangerError("cancelled", "cancelled by the user");
      outcomes.set(step, { ok: true, ms: ms() });
    } catch (err) {
      outcomes.set(step, { ok: false, ms: ms(), err });
      return;
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
