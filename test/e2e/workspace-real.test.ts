import { afterAll, beforeAll, describe, expect } from "bun:test";
import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bangerBin } from "../../src/testing/cli.ts";
import { realGuestChecks, realHome, type RealHome } from "../../src/testing/real-env.ts";
import { testNeeds } from "../../src/testing/skip.ts";
import { git, makeBulkRepo, makeCommittedRepo, makeFixtureRepo, repoState } from "../../src/testing/testrepo.ts";

// Workspace acceptance through the compiled CLI against real QEMU guests: one VM (t1) for
// prepare and export, then one made by `vm run` (r1) for run and the 200 MB timing.
const needs = realGuestChecks();
const T = 300_000;
let h: RealHome;
const tmp = mkdtempSync(join(tmpdir(), "banger-wsreal-"));
let repo = "";

beforeAll(async () => {
  if (needs.some(([ok]) => !ok)) return;
  h = await realHome();
  writeFileSync(join(h.env.HOME!, ".gitconfig"), "[user]\n\tname = Guest Tester\n\temail = tester@example.com\n");
  repo = makeFixtureRepo(tmp).repo;
}, 900_000);

afterAll(async () => {
  if (h) {
    await h.run(["vm", "delete", "--force", "t1", "r1"]);
    await h.teardownNet();
    await h.cleanup();
  }
  rmSync(tmp, { recursive: true, force: true });
});

/** Runs a shell script in the guest through `vm ssh`. */
async function inGuest(vm: string, script: string) {
  const r = await h.run(["vm", "ssh", vm, "--", "sh", "-c", script]);
  if (r.code !== 0) throw new Error(`in ${vm}: ${script}\nexit ${r.code}: ${r.stderr}`);
  return r.stdout.replace(/\n$/, "");
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const v = await fn();
  return [v, (performance.now() - t) / 1000];
}

/** Path, mode and content of every file outside .git, so any change to the working tree shows. */
function treeDigest(top: string): string {
  const h = new Bun.CryptoHasher("sha256");
  const names = readdirSync(top, { recursive: true, encoding: "utf8" })
    .filter((n) => n !== ".git" && !n.startsWith(".git/"))
    .sort();
  for (const n of names) {
    const st = lstatSync(join(top, n));
    h.update(`${n}\0${st.mode}\0`);
    if (st.isFile()) h.update(readFileSync(join(top, n)));
    else if (st.isSymbolicLink()) h.update(readlinkSync(join(top, n)));
  }
  return h.digest("hex");
}

// The same script runs in the host repository and in the guest checkout; the outputs must match.
const STATE = "git log --format='%H %an <%ae> %s' && git status --porcelain=v1 --untracked-files=all && git diff --cached && git diff && cat new.txt";

/** Runs a script in a host directory without letting git refresh the index. */
function onHost(dir: string, script: string): string {
  const r = Bun.spawnSync(["sh", "-c", script], { cwd: dir, env: { ...process.env, GIT_OPTIONAL_LOCKS: "0" } });
  if (r.exitCode !== 0) throw new Error(`${script}: ${r.stderr.toString()}`);
  return r.stdout.toString().replace(/\n$/, "");
}

describe("workspace on a real guest (needs qemu, root, built dist/)", () => {
  testNeeds(
    "prepare: commits, staged, unstaged and untracked changes arrive; ignored files and submodule contents do not",
    needs,
    async () => {
      const [c, boot] = await timed(() => h.run(["vm", "create", "--name", "t1"]));
      expect(c.code).toBe(0);
      console.log(`t1 ready in ${boot.toFixed(1)} s`);
      const [p, s] = await timed(() => h.run(["vm", "workspace", "prepare", "t1", "--from", repo]));
      expect(p.code).toBe(0);
      console.log(`prepare (fixture repo): ${s.toFixed(1)} s: ${p.stdout.trim()}`);
      expect(await inGuest("t1", `cd /root/repo && ${STATE}`)).toBe(onHost(repo, STATE));
      // Ignored files stay behind; the submodule is an empty directory, as in a fresh clone.
      expect(await inGuest("t1", "cd /root/repo && ls -A sub | wc -l; test -e debug.log && echo debug.log; test -e build && echo build; true")).toBe("0");
    },
    T,
  );

  testNeeds(
    "prepare --full-copy --replace: ignored files and the submodule's checkout arrive too",
    needs,
    async () => {
      const again = await h.run(["vm", "workspace", "prepare", "t1", "--from", repo]);
      expect(again.code).toBe(1);
      expect(again.stderr).toContain("--replace");
      const [p, s] = await timed(() => h.run(["vm", "workspace", "prepare", "t1", "--from", repo, "--full-copy", "--replace"]));
      expect(p.code).toBe(0);
      console.log(`prepare --full-copy: ${s.toFixed(1)} s: ${p.stdout.trim()}`);
      const script = `cat debug.log build/out.bin sub/lib.txt && git -C sub rev-parse HEAD && ${STATE}`;
      expect(await inGuest("t1", `cd /root/repo && ${script}`)).toBe(onHost(repo, script));
      expect(onHost(repo, "cat debug.log build/out.bin sub/lib.txt")).toBe("ignored\nignored too\nsubmodule content");
    },
    T,
  );

  testNeeds(
    "export: branch banger/t1 holds a guest commit and uncommitted work; host checkout byte-identical; --force and --patch",
    needs,
    async () => {
      await inGuest(
        "t1",
        "cd /root/repo && echo committed > g1.txt && git add -A && git commit -qm 'guest commit' && echo uncommitted > g2.txt && echo more >> a.txt",
      );
      const before = { ...repoState(repo), tree: treeDigest(repo) };
      const base = git(repo, "rev-parse", "HEAD");
      const [e, s] = await timed(() => h.run(["vm", "workspace", "export", "t1", "--to", repo]));
      expect(e.code).toBe(0);
      console.log(`export: ${s.toFixed(1)} s: ${e.stdout.trim()}`);
      expect(e.stdout).toContain("banger/t1: 1 commit + uncommitted changes");
      const after = { ...repoState(repo), tree: treeDigest(repo) };
      const branchLine = `refs/heads/banger/t1 ${git(repo, "rev-parse", "banger/t1")}`;
      expect({
        ...after,
        refs: after.refs
          .split("\n")
          .filter((l) => l !== branchLine)
          .join("\n"),
      }).toEqual(before);

      expect(git(repo, "log", "--format=%s", `${base}..banger/t1`)).toBe("banger: uncommitted changes\nguest commit");
      expect(git(repo, "show", "banger/t1~1:g1.txt")).toBe("committed");
      expect(git(repo, "show", "banger/t1:g2.txt")).toBe("uncommitted");
      expect(git(repo, "show", "banger/t1:a.txt")).toBe("a.txt staged\nmore");
      // The host's own uncommitted state travelled with the guest's first commit.
      expect(git(repo, "show", "banger/t1~1:c.txt")).toBe("c.txt staged then changed again");

      const refused = await h.run(["vm", "workspace", "export", "t1", "--to", repo]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain("--force");
      expect(`refs/heads/banger/t1 ${git(repo, "rev-parse", "banger/t1")}`).toBe(branchLine);
      expect((await h.run(["vm", "workspace", "export", "t1", "--to", repo, "--force"])).code).toBe(0);

      const patch = join(tmp, "t1.patch");
      const [pe, ps] = await timed(() => h.run(["vm", "workspace", "export", "t1", "--to", repo, "--patch", patch]));
      expect(pe.code).toBe(0);
      console.log(`export --patch: ${ps.toFixed(1)} s`);
      const check = join(tmp, "check");
      git(tmp, "clone", "-q", repo, check);
      git(check, "checkout", "-q", base);
      expect(git(check, "apply", "--check", patch)).toBe("");
      git(check, "am", "-q", patch);
      expect(git(check, "rev-parse", "HEAD^{tree}")).toBe(git(repo, "rev-parse", "banger/t1^{tree}"));
      expect(await h.run(["vm", "delete", "--force", "t1"])).toMatchObject({ code: 0 });
    },
    T,
  );

  testNeeds(
    "vm run: the command runs in the prepared repo with its exit code; without a command it prints the next steps",
    needs,
    async () => {
      const small = makeCommittedRepo(join(tmp, "small"), { "README.md": "# small\n" });
      const [r, s] = await timed(() => h.run(["vm", "run", "--name", "r1", "--", "sh", "-c", "test -f README.md && exit 7"], { cwd: small }));
      console.log(`vm run (create + prepare + command): ${s.toFixed(1)} s`);
      expect(r.stderr).not.toContain("error");
      expect(r.code).toBe(7);
      // banger's own lines go to stderr: stdout is the command's alone.
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain("r1 is ready");
      expect(r.stderr).toContain("r1:/root/repo");
      const next = await h.run(["vm", "run", "--name", "r1"], { cwd: small });
      expect(next.code).toBe(0);
      expect(next.stdout).toContain("banger vm ssh r1");
      expect(next.stdout).toContain("banger vm workspace export r1");
      expect(next.stderr).toContain("r1:/root/repo: unchanged");
    },
    T,
  );

  testNeeds(
    "a 200 MB repository: prepare against plain tar | ssh | tar of the same tree",
    needs,
    async () => {
      const big = join(tmp, "big");
      const [, gen] = await timed(async () => makeBulkRepo(big, 200));
      console.log(`generated 200 MiB repo in ${gen.toFixed(1)} s`);
      const pipe = `tar -C ${big} -c . | ${bangerBin} vm ssh r1 -- sh -c 'rm -rf /root/b && mkdir /root/b && tar -x -C /root/b'`;
      const [b, base] = await timed(async () => Bun.spawn(["sh", "-c", pipe], { env: h.env, stdout: "ignore", stderr: "inherit" }).exited);
      expect(b).toBe(0);
      await inGuest("r1", "rm -rf /root/b");
      const [p, prep] = await timed(() => h.run(["vm", "workspace", "prepare", "r1", "--from", big, "--replace"]));
      expect(p.code).toBe(0);
      console.log(`200 MiB: prepare ${prep.toFixed(1)} s (${p.stdout.trim()}); baseline tar | vm ssh | tar ${base.toFixed(1)} s`);
      const count = await inGuest("r1", "cd /root/repo && git status --porcelain | wc -l && find . -path ./.git -prune -o -type f -print | wc -l");
      expect(count.split("\n").map(Number)).toEqual([0, 1600]);
    },
    T,
  );
});
