import { expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { rejection } from "../testing/errors.ts";
import { cancellableRunner, CommandError, hostRunner } from "./runner.ts";

/** Pids whose command line holds `marker`. */
function withMarker(marker: string): number[] {
  return readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        return readFileSync(`/proc/${n}/cmdline`, "utf8").includes(marker);
      } catch {
        return false;
      }
    })
    .map(Number);
}

test("a run returns output and code, and throws CommandError on failure unless allowed", async () => {
  expect(await hostRunner.run(["sh", "-c", "echo out; echo err >&2"])).toEqual({ code: 0, stdout: "out\n", stderr: "err\n" });
  expect((await hostRunner.run(["sh", "-c", "exit 3"], { allowFailure: true })).code).toBe(3);
  expect(hostRunner.run(["sh", "-c", "exit 3"])).rejects.toBeInstanceOf(CommandError);
});

test("aborting stops the command and the children it started, and the run fails as cancelled", async () => {
  const marker = `banger-runner-test-${process.pid}`;
  const abort = new AbortController();
  const runner = cancellableRunner(hostRunner, abort.signal);
  const t = performance.now();
  // The outer shell and two children that stay shells (keeping the marker in their argv) while they sleep.
  const running = runner.run(["sh", "-c", `sh -c 'sleep 30; :' ${marker} & sh -c 'sleep 31; :' ${marker}; wait`]).catch((e) => e);
  await Bun.sleep(200);
  expect(withMarker(marker).length).toBe(3);
  abort.abort();
  const e = await rejection(running.then((x) => Promise.reject(x)));
  expect(e.code).toBe("cancelled");
  expect(performance.now() - t).toBeLessThan(5000);
  for (let i = 0; i < 50 && withMarker(marker).length; i++) await Bun.sleep(100);
  expect(withMarker(marker)).toEqual([]);
});

test("a runner whose signal has already fired runs nothing", async () => {
  const abort = new AbortController();
  abort.abort();
  const e = await rejection(cancellableRunner(hostRunner, abort.signal).run(["touch", "/nonexistent/never"]));
  expect(e.code).toBe("cancelled");
});
