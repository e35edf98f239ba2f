import { afterAll, beforeAll, describe, expect } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { realGuestChecks, realHome, type RealHome } from "../../src/testing/real-env.ts";
import { testNeeds } from "../../src/testing/skip.ts";
import { makeCommittedRepo, repoState } from "../../src/testing/testrepo.ts";

// The everyday loop through the compiled CLI on ONE real QEMU guest (lp), shared by every
// check: the matching directory, a re-run bringing host changes, the guest's own work
// refused / kept / replaced, and a directory that is not a git repository.
const needs = realGuestChecks();
const T = 300_000;
let h: RealHome;
const tmp = mkdtempSync(join(tmpdir(), "banger-loop-"));
const repo = join(tmp, "repo");

beforeAll(async () => {
  if (needs.some(([ok]) => !ok)) return;
  h = await realHome();
  makeCommittedRepo(repo, { "sub/keep.txt": "kept\n", "edit.txt": "v1\n", "gone.txt": "to be deleted\n", "other.txt": "other v1\n" });
}, 900_000);

afterAll(async () => {
  if (h) {
    await h.run(["vm", "delete", "--force", "lp"]);
    await h.teardownNet();
    await h.cleanup();
  }
  rmSync(tmp, { recursive: true, force: true });
});

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const v = await fn();
  return [v, (performance.now() - t) / 1000];
}

const run = (cwd: string, ...args: string[]) => h.run(["vm", "run", "--name", "lp", ...args], { cwd });

/** A script in the guest through the agent (`vm exec`): no SSH handshake per check. */
async function inGuest(script: string): Promise<string> {
  const r = await h.run(["vm", "exec", "lp", "--", "sh", "-c", script]);
  if (r.code !== 0) throw new Error(`in lp: ${script}\nexit ${r.code}: ${r.stderr}`);
  return r.stdout.replace(/\n$/, "");
}

/** `git status` of the host repository as it prints it (leading spaces kept), without refreshing the index. */
function hostStatus(): string {
  const r = Bun.spawnSync(["git", "status", "--porcelain=v1", "--untracked-files=all"], { cwd: repo, env: { ...process.env, GIT_OPTIONAL_LOCKS: "0" } });
  return r.stdout.toString();
}

describe("vm run as the everyday loop on a real guest (needs qemu, root, built dist/)", () => {
  testNeeds(
    "from repo/sub the command runs in /root/repo/sub; /root has no lost+found",
    needs,
    async () => {
      const [r, s] = await timed(() => run(join(repo, "sub"), "--", "pwd"));
      console.log(`vm run (create + prepare + pwd): ${s.toFixed(1)} s`);
      expect(r.stderr).not.toContain("error");
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe("/root/repo/sub");
      expect(r.stderr).toContain("lp:/root/repo: prepared");
      expect(await inGuest("ls -A /root")).not.toContain("lost+found");
      const [cwd, again] = await timed(() => run(join(repo, "sub"), "--cwd", "/tmp", "--", "pwd"));
      console.log(`vm run re-run with no change: ${again.toFixed(1)} s; ${cwd.stderr.trim()}`);
      expect(cwd.stdout.trim()).toBe("/tmp");
      expect(cwd.stderr).toContain("lp:/root/repo: unchanged");
      const bare = await run(join(repo, "sub"), "--no-workspace", "--", "pwd");
      expect(bare.stdout.trim()).toBe("/root");
      expect(bare.stderr).not.toContain("/root/repo");
    },
    T,
  );

  testNeeds(
    "a re-run brings a tracked edit, an untracked file and a deletion; the host's tree, index and HEAD stay",
    needs,
    async () => {
      writeFileSync(join(repo, "edit.txt"), "v2 from the host\n");
      writeFileSync(join(repo, "fresh.txt"), "untracked\n");
      rmSync(join(repo, "gone.txt"));
      const before = repoState(repo);
      const [r, s] = await timed(() => run(repo, "--", "sh", "-c", "cat edit.txt fresh.txt; test ! -e gone.txt && echo gone"));
      console.log(`vm run re-run with 3 changes: ${s.toFixed(1)} s; ${r.stderr.trim()}`);
      expect(r.code).toBe(0);
      expect(r.stdout).toBe("v2 from the host\nuntracked\ngone\n");
      expect(r.stderr).toContain("synced");
      expect(repoState(repo)).toEqual(before);
      expect(`${await inGuest("cd /root/repo && git status --porcelain=v1 --untracked-files=all")}\n`).toBe(hostStatus());
    },
    T,
  );

  testNeeds(
    "guest and host both changed: refused with the three choices, both trees unchanged; --keep, then --replace",
    needs,
    async () => {
      await inGuest("cd /root/repo && echo 'guest work' > other.txt");
      writeFileSync(join(repo, "edit.txt"), "v3 from the host\n");
      const host = repoState(repo);
      const guestBefore = await inGuest("cd /root/repo && git status --porcelain=v1 && cat edit.txt other.txt");
      const refused = await run(repo, "--", "true");
      expect(refused.code).not.toBe(0);
      for (const choice of ["vm workspace export lp", "--replace", "--keep"]) expect(refused.stderr).toContain(choice);
      expect(refused.stderr).toContain("other.txt");
      expect(repoState(repo)).toEqual(host);
      expect(readFileSync(join(repo, "other.txt"), "utf8")).toBe("other v1\n");
      expect(await inGuest("cd /root/repo && git status --porcelain=v1 && cat edit.txt other.txt")).toBe(guestBefore);

      const kept = await run(repo, "--keep", "--", "cat", "edit.txt", "other.txt");
      expect(kept.code).toBe(0);
      expect(kept.stdout).toBe("v2 from the host\nguest work\n");

      const replaced = await run(repo, "--replace", "--", "sh", "-c", "cat edit.txt other.txt; git status --porcelain=v1 --untracked-files=all");
      expect(replaced.code).toBe(0);
      expect(replaced.stdout).toBe(`v3 from the host\nother v1\n${hostStatus()}`);
      expect(repoState(repo)).toEqual(host);
    },
    T,
  );

  testNeeds(
    "a directory that is not a git repository is copied; a changed file arrives on the next run",
    needs,
    async () => {
      const plain = join(tmp, "plain");
      mkdirSync(join(plain, "src"), { recursive: true });
      writeFileSync(join(plain, "src", "app.txt"), "app v1\n");
      writeFileSync(join(plain, "notes.txt"), "notes\n");
      // The guest's /root/repo holds the git checkout; this directory gets a fresh start there.
      await inGuest("rm -rf /root/repo");
      // Outside a repository the directory it starts in is the workspace; --cwd picks a directory in it.
      const first = await run(plain, "--cwd", "src", "--", "sh", "-c", "pwd; cat app.txt ../notes.txt");
      expect(first.stderr).toContain("lp:/root/repo: prepared");
      expect(first.code).toBe(0);
      expect(first.stdout).toBe("/root/repo/src\napp v1\nnotes\n");
      writeFileSync(join(plain, "src", "app.txt"), "app v2\n");
      utimesSync(join(plain, "src", "app.txt"), new Date(), new Date(Date.now() + 2000));
      const [second, s] = await timed(() => run(plain, "--", "cat", "src/app.txt"));
      console.log(`vm run re-run of a plain directory with one changed file: ${s.toFixed(1)} s; ${second.stderr.trim()}`);
      expect(second.code).toBe(0);
      expect(second.stdout).toBe("app v2\n");
    },
    T,
  );
});
