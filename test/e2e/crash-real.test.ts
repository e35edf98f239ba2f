/**
 * kill -9 of the daemon in the middle of a warm create, a fork and a suspend, on ONE real guest
 * under QEMU (TCG). The daemon is held at a named point (BANGER_PAUSE_AT_STEP), killed, and the
 * next CLI call starts a fresh one; after its reconcile every VM involved is whole (running and
 * answering ssh with its processes, or suspended and resumable, or stopped and startable) or gone,
 * and nothing is left: no QEMU, TAP, NAT entry, row, VM directory or cache file of a gone VM.
 * The file boots one guest.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { crashAt, storeRows, vmDirs } from "../../src/testing/crash.ts";
import { realGuestChecks, realHome, type RealHome } from "../../src/testing/real-env.ts";
import { testNeeds } from "../../src/testing/skip.ts";
import { tapPrefix } from "../../src/host/network/config.ts";

const needs = realGuestChecks();
const TAPS = 4;
const T = 600_000;
let h: RealHome;
let sleepPid = "";

type View = { id: string; name: string; state: string; pid: number | null; dir: string };

beforeAll(async () => {
  if (needs.some(([ok]) => !ok)) return;
  h = await realHome({ taps: TAPS, config: `boot_timeout = "300s"\nwarm_cache = 1\n` });
}, 900_000);

afterAll(async () => {
  if (!h) return;
  await h.run(["vm", "delete", "--force", ...storeRows(h).map((r) => r.name)]);
  await h.run(["cache", "prune", "--all"]);
  await h.teardownNet();
  await h.cleanup();
});

const json = async <T>(args: string[]): Promise<T> => {
  const r = await h.run([...args, "--json"]);
  if (r.code !== 0) throw new Error(`${args.join(" ")}: exit ${r.code}: ${r.stderr}`);
  // A create prints its progress first; the answer is the last line. Lists are one document.
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    return JSON.parse(r.stdout.trim().split("\n").at(-1)!) as T;
  }
};
const ssh = async (script: string) => {
  const r = await h.run(["vm", "ssh", "c1", "--", "sh", "-c", script]);
  if (r.code !== 0) throw new Error(`ssh ${script}: exit ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
};
const linesOf = (cmd: string[]) =>
  Bun.spawnSync(cmd)
    .stdout.toString()
    .split("\n")
    .filter((l) => l.trim());
const warmDir = () => join(h.paths.cacheDir, "warm");

/**
 * After a restart (this call starts the new daemon): the VMs are exactly `expected` (name → state),
 * and nothing else of any VM exists on the host. Returns the views.
 */
async function expectOnly(expected: Record<string, string>): Promise<View[]> {
  const list = await json<View[]>(["vm", "list"]);
  expect(Object.fromEntries(list.map((v) => [v.name, v.state]))).toEqual(expected);
  expect(
    storeRows(h)
      .map((r) => r.name)
      .sort(),
  ).toEqual(Object.keys(expected).sort());
  expect(vmDirs(h).sort()).toEqual(list.map((v) => v.id).sort());
  // Every QEMU of this home belongs to a VM in the list, and runs under the pid it shows.
  const qemus = linesOf(["pgrep", "-f", h.paths.vmsDir]).map(Number);
  expect(qemus.sort()).toEqual(list.flatMap((v) => (v.pid ? [v.pid] : [])).sort());
  // The TAP pool and nothing beyond it; NAT only for the live VMs (all made with --nat).
  const prefix = tapPrefix({ bridge: h.bridge });
  const taps = linesOf(["ip", "-o", "link", "show"]).filter((l) => l.split(": ")[1]?.startsWith(prefix));
  expect(taps.length).toBe(TAPS);
  const status = await json<{ nat: unknown[] }>(["host", "status"]);
  expect(status.nat.length).toBe(list.filter((v) => v.state === "running" || v.state === "paused").length);
  // The cache holds complete goldens only; no VM directory holds a temp or half-made file.
  const goldens = await json<Array<{ key: string }>>(["cache", "list"]);
  expect(readdirSync(warmDir()).sort()).toEqual(goldens.map((g) => g.key).sort());
  for (const v of list) {
    const files = readdirSync(v.dir);
    expect(files.filter((f) => /\.(own|tmp)$|^\.partial-/.test(f))).toEqual([]);
    if (v.state !== "suspended") expect(files.filter((f) => f.startsWith("vmstate"))).toEqual([]);
  }
  return list;
}

describe("kill -9 of the daemon during warm create, fork and suspend, on a real guest (needs qemu, mmdebstrap, root)", () => {
  testNeeds(
    "setup: c1 runs a long sleep, and its golden for warm start is kept",
    needs,
    async () => {
      const c1 = await json<View>(["vm", "create", "--name", "c1", "--nat"]);
      expect(c1.state).toBe("running");
      sleepPid = await ssh("nohup sleep 100000 >/dev/null 2>&1 & echo $!");
      for (let i = 0; i < 600; i++) {
        if ((await json<unknown[]>(["cache", "list"])).length === 1) break;
        await Bun.sleep(200);
      }
      expect((await json<unknown[]>(["cache", "list"])).length).toBe(1);
      await expectOnly({ c1: "running" });
    },
    T,
  );

  for (const point of ["warm copy", "reidentify"]) {
    testNeeds(
      `a warm create killed at "${point}" is removed entirely; the golden and c1 are untouched`,
      needs,
      async () => {
        const [golden] = await json<Array<{ key: string }>>(["cache", "list"]);
        const { result } = await crashAt(h, point, ["vm", "create", "--name", "w1", "--nat"]);
        expect(result.code).not.toBe(0);
        await expectOnly({ c1: "running" });
        expect((await json<Array<{ key: string }>>(["cache", "list"])).map((g) => g.key)).toEqual([golden!.key]);
        expect(await ssh(`kill -0 ${sleepPid} && echo alive`)).toBe("alive");
      },
      T,
    );
  }

  for (const point of ["fork freeze", "reidentify"]) {
    testNeeds(
      `a fork killed at "${point}": the copy is gone, c1 runs on (not left frozen) with its process`,
      needs,
      async () => {
        const { result } = await crashAt(h, point, ["vm", "fork", "c1", "--name", "c1-cp"]);
        expect(result.code).not.toBe(0);
        await expectOnly({ c1: "running" });
        expect(await ssh(`kill -0 ${sleepPid} && echo alive`)).toBe("alive");
      },
      T,
    );
  }

  for (const point of ["suspend save", "suspend record"]) {
    testNeeds(
      `a suspend killed at "${point}" (before the state is recorded complete): c1 runs on with its process`,
      needs,
      async () => {
        await crashAt(h, point, ["vm", "suspend", "c1"], { killClient: true });
        await expectOnly({ c1: "running" });
        expect(await ssh(`kill -0 ${sleepPid} && echo alive`)).toBe("alive");
      },
      T,
    );
  }

  for (const point of ["suspend end", "suspend release"]) {
    testNeeds(
      `a suspend killed at "${point}" (state recorded): c1 stays suspended with no QEMU, and resumes with its process`,
      needs,
      async () => {
        await crashAt(h, point, ["vm", "suspend", "c1"], { killClient: true });
        await expectOnly({ c1: "suspended" });
        expect((await h.run(["vm", "resume", "c1"])).code).toBe(0);
        await expectOnly({ c1: "running" });
        expect(await ssh(`kill -0 ${sleepPid} && echo alive`)).toBe("alive");
      },
      T,
    );
  }
});
