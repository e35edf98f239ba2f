import { afterAll, describe, expect, test } from "bun:test";
import { hasBin, testNeeds } from "../../testing/skip.ts";
import { cmdline, findByArgs, isAlive, isOwnDaemon, isOwnProcess, isSameProcess, signal } from "./process.ts";

const started: number[] = [];
afterAll(() => {
  for (const pid of started) signal(pid, "SIGKILL");
});

/** A long-lived process whose argv carries `-qmp VALUE`, optionally as another user. */
function decoy(value: string, asUid?: number): number {
  const drop = asUid === undefined ? [] : ["setpriv", `--reuid=${asUid}`, `--regid=${asUid}`, "--clear-groups"];
  // `read` is a shell builtin: the decoy never forks, so no child briefly carries the same argv.
  const p = Bun.spawn([...drop, "sh", "-c", "read x", "decoy", "-qmp", value], { stdin: "pipe", stdout: "ignore", stderr: "ignore" });
  started.push(p.pid);
  return p.pid;
}

async function until(cond: () => boolean) {
  for (let i = 0; i < 200 && !cond(); i++) await Bun.sleep(10);
}

describe("process lookups count only this user's processes", () => {
  test("an own process with the argv is found", async () => {
    const value = `unix:/tmp/own-${process.pid}.sock`;
    const pid = decoy(value);
    await until(() => findByArgs("-qmp", value).length > 0);
    expect(findByArgs("-qmp", value)).toEqual([pid]);
    expect(isSameProcess(pid)).toBe(true);
    expect(isOwnProcess(pid)).toBe(true);
    expect(isOwnDaemon(pid)).toBe(false);
  });

  testNeeds(
    "another user's decoy with the same argv is not ours (root: runs it as nobody)",
    [[process.getuid?.() === 0 && hasBin("setpriv"), "needs root and setpriv"]],
    async () => {
      const value = `unix:/tmp/decoy-${process.pid}.sock`;
      const pid = decoy(value, 65534);
      // setpriv (root, with the same words in its argv) drops to nobody and then execs sh in this pid.
      await until(() => cmdline(pid)?.[0] === "sh" && !isOwnProcess(pid));
      expect(cmdline(pid)).toContain("-qmp");
      expect(isOwnProcess(pid)).toBe(false);
      expect(findByArgs("-qmp", value)).toEqual([]);
      // Nor does "is the recorded VMM alive" count it, whatever pid a handle names.
      expect(isAlive(pid)).toBe(true);
      expect(isSameProcess(pid)).toBe(false);
    },
  );
});
