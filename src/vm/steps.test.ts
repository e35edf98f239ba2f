import { describe, expect, test } from "bun:test";
import { runSteps, type Step } from "./steps.ts";

const recorder = () => {
  const lines: string[] = [];
  const steps: Step<unknown>[] = ["a", "b", "c"].map((name) => ({
    name,
    run: async () => void lines.push(`run ${name}`),
    undo: async () => void lines.push(`undo ${name}`),
  }));
  return { lines, steps, log: (m: string) => lines.push(m.replace(/ \d+ms/, "")) };
};

describe("runSteps", () => {
  test("pauseAt waits before the step, says so in the log, and a cancel then undoes only what ran", async () => {
    const { lines, steps, log } = recorder();
    const ac = new AbortController();
    const run = runSteps(steps, {}, { progress: () => {}, signal: ac.signal, log, pauseAt: "b" });
    await Bun.sleep(30);
    expect(lines).toEqual(["run a", "step a", "paused at b"]);
    ac.abort();
    await expect(run).rejects.toThrow("cancelled by the user");
    expect(lines.slice(3)).toEqual(["step b failed after: cancelled by the user; undoing a", "undo a"]);
  });

  test("failAt fails the named step before it runs and undoes the earlier ones in reverse", async () => {
    const { lines, steps, log } = recorder();
    await expect(runSteps(steps, {}, { progress: () => {}, signal: new AbortController().signal, log, failAt: "c" })).rejects.toThrow("injected failure at c");
    expect(lines).toEqual(["run a", "step a", "run b", "step b", "step c failed after: injected failure at c; undoing b, a", "undo b", "undo a"]);
  });
});
