import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BASE_REF, exportWorkspace, localShell, prepareWorkspace } from "./index.ts";
import { git, makeCommittedRepo, makeFixtureRepo, repoState } from "../testing/testrepo.ts";
import { rejection } from "../testing/errors.ts";

const tmp = mkdtempSync(join(tmpdir(), "banger-ws-test-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const { repo } = makeFixtureRepo(tmp);

let n = 0;
/** A fresh "guest": its /root is a temp dir and the workspace goes to <root>/repo. */
function guest() {
  const root = join(tmp, `guest${++n}`, "root");
  mkdirSync(root, { recursive: true });
  return { shell: localShell(root), dir: join(root, "repo") };
}

const indexHash = (dir: string) =>
  createHash("sha256")
    .update(readFileSync(join(dir, ".git", "index")))
    .digest("hex");

describe("prepareWorkspace", () => {
  test("carries history, staged, unstaged and untracked files but not ignored ones; host untouched", async () => {
    const before = repoState(repo);
    const g = guest();
    const r = await prepareWorkspace({ shell: g.shell, from: join(repo, "dir"), guestDir: g.dir });
    expect(repoState(repo)).toEqual(before);
    expect(r.source).toBe(repo);
    expect(r.base).toBe(git(repo, "rev-parse", "HEAD"));
    expect(git(g.dir, "log", "--format=%H %s")).toBe(git(repo, "log", "--format=%H %s"));
    // Same staged/unstaged split as the host, submodule aside (it arrives uninitialised).
    expect(git(g.dir, "status", "--porcelain=v1", "--untracked-files=all")).toBe(before.status);
    expect(git(g.dir, "diff", "--cached", "--name-only")).toBe(git(repo, "diff", "--cached", "--name-only"));
    expect(readFileSync(join(g.dir, "c.txt"), "utf8")).toBe("c.txt staged then changed again\n");
    expect(readFileSync(join(g.dir, "new.txt"), "utf8")).toBe("untracked\n");
    expect(readFileSync(join(g.dir, "dir/nested file.txt"), "utf8")).toBe("spaces in the name\n");
    expect(existsSync(join(g.dir, "d.txt"))).toBe(false);
    expect(existsSync(join(g.dir, "debug.log"))).toBe(false);
    expect(existsSync(join(g.dir, "build"))).toBe(false);
    expect(readdirSync(join(g.dir, "sub"))).toEqual([]);
    expect(git(g.dir, "config", "user.name")).toBe("Ada Host");
    expect(git(g.dir, "config", "user.email")).toBe("ada@example.com");
    expect(git(g.dir, "rev-parse", BASE_REF)).toBe(r.base!);
    // The guest can commit.
    git(g.dir, "commit", "-q", "-m", "from the guest");
    expect(git(g.dir, "log", "-1", "--format=%an %s")).toBe("Ada Host from the guest");
  });

  test("fullCopy brings ignored files and submodule contents", async () => {
    const before = repoState(repo);
    const g = guest();
    await prepareWorkspace({ shell: g.shell, from: repo, guestDir: g.dir, fullCopy: true });
    expect(repoState(repo)).toEqual(before);
    expect(readFileSync(join(g.dir, "debug.log"), "utf8")).toBe("ignored\n");
    expect(readFileSync(join(g.dir, "build/out.bin"), "utf8")).toBe("ignored too\n");
    expect(readFileSync(join(g.dir, "sub/lib.txt"), "utf8")).toBe("submodule content\n");
    expect(git(join(g.dir, "sub"), "log", "--format=%s")).toBe("sub one");
    expect(git(g.dir, "status", "--porcelain=v1", "--untracked-files=all")).toBe(before.status);
  });

  test("default mode leaves submodules uninitialised but checkable-out offline from the copied .git/modules", async () => {
    const g = guest();
    await prepareWorkspace({ shell: g.shell, from: repo, guestDir: g.dir });
    // The url in .gitmodules points at a host path; the guest must not need it.
    git(g.dir, "config", "submodule.sub.url", "file:///nonexistent");
    git(g.dir, "submodule", "update", "--init", "-q");
    expect(readFileSync(join(g.dir, "sub/lib.txt"), "utf8")).toBe("submodule content\n");
  });

  test("a repository without commits, into a guest path with a space and a quote", async () => {
    const fresh = join(tmp, "fresh");
    mkdirSync(fresh);
    git(fresh, "init", "-q");
    writeFileSync(join(fresh, "draft.txt"), "first words\n");
    const g = guest();
    const dir = join(g.dir, "..", "it's a repo");
    const r = await prepareWorkspace({ shell: g.shell, from: fresh, guestDir: dir });
    expect(r.base).toBeNull();
    expect(readFileSync(join(dir, "draft.txt"), "utf8")).toBe("first words\n");
    const e = await exportWorkspace({ shell: g.shell, to: fresh, vmName: "v", guestDir: dir });
    expect(e).toMatchObject({ branch: "banger/v", commits: 0, uncommittedIncluded: true, base: null });
    expect(git(fresh, "show", "banger/v:draft.txt")).toBe("first words");
    // The host's effective identity (possibly from global or system config) travels; "banger" only when there is none.
    const hostName = Bun.spawnSync(["git", "-C", fresh, "config", "user.name"]).stdout.toString().trim();
    expect(git(fresh, "log", "--format=%an", "banger/v")).toBe(hostName || "banger");
  });

  test("refuses a non-empty guest directory unless told to replace it", async () => {
    const g = guest();
    await prepareWorkspace({ shell: g.shell, from: repo, guestDir: g.dir });
    writeFileSync(join(g.dir, "guest-work.txt"), "precious\n");
    const e = await rejection(prepareWorkspace({ shell: g.shell, from: repo, guestDir: g.dir }));
    expect(e.code).toBe("already_exists");
    expect(existsSync(join(g.dir, "guest-work.txt"))).toBe(true);
    await prepareWorkspace({ shell: g.shell, from: repo, guestDir: g.dir, replace: true });
    expect(existsSync(join(g.dir, "guest-work.txt"))).toBe(false);
  });

  test("two prepares racing into one guest directory: one lands whole, the other is refused", async () => {
    const g = guest();
    const other = makeCommittedRepo(join(tmp, "other"), { "only-in-other.txt": "other\n" });
    const results = await Promise.allSettled([
      prepareWorkspace({ shell: g.shell, from: repo, guestDir: g.dir }),
      prepareWorkspace({ shell: g.shell, from: other, guestDir: g.dir }),
    ]);
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(won.length).toBe(1);
    expect(lost.map((r) => (r.reason as { code?: string }).code)).toEqual(["already_exists"]);
    const winner = results[0]!.status === "fulfilled" ? repo : other;
    expect(git(g.dir, "rev-parse", "HEAD")).toBe(git(winner, "rev-parse", "HEAD"));
    expect(existsSync(join(g.dir, "only-in-other.txt"))).toBe(winner === other);
    expect(existsSync(join(g.dir, "new.txt"))).toBe(winner === repo);
  });

  test("refuses a directory that is not a git repository", async () => {
    const g = guest();
    const plain = join(tmp, "plain");
    mkdirSync(plain);
    const e = await rejection(prepareWorkspace({ shell: g.shell, from: plain, guestDir: g.dir }));
    expect(e.code).toBe("failed_precondition");
    expect(e.message).toContain("not inside a git repository");
  });
});

describe("exportWorkspace", () => {
  test("guest commits and uncommitted changes land on banger/<vm>; host and guest checkout untouched", async () => {
    const g = guest();
    const { base } = await prepareWorkspace({ shell: g.shell, from: repo, guestDir: g.dir });
    git(g.dir, "add", "-A");
    git(g.dir, "commit", "-q", "-m", "guest work");
    writeFileSync(join(g.dir, "b.txt"), "changed in the guest, not committed\n");
    writeFileSync(join(g.dir, "guest-new.txt"), "untracked in the guest\n");
    writeFileSync(join(g.dir, "guest.log"), "ignored in the guest\n");
    const guestBefore = { status: git(g.dir, "status", "--porcelain"), index: indexHash(g.dir), head: git(g.dir, "rev-parse", "HEAD") };
    const hostBefore = repoState(repo);

    const r = await exportWorkspace({ shell: g.shell, to: repo, vmName: "web", guestDir: g.dir });
    expect(r).toMatchObject({ branch: "banger/web", commits: 1, uncommittedIncluded: true, base });
    expect(r.summary).toBe("banger/web: 1 commit + uncommitted changes");
    expect({ status: git(g.dir, "status", "--porcelain"), index: indexHash(g.dir), head: git(g.dir, "rev-parse", "HEAD") }).toEqual(guestBefore);
    const after = repoState(repo);
    expect({ ...after, refs: "" }).toEqual({ ...hostBefore, refs: "" });
    expect(after.refs.split("\n").filter((l) => !l.startsWith("refs/heads/banger/web "))).toEqual(hostBefore.refs.split("\n"));

    expect(git(repo, "log", "--format=%s", `${base}..banger/web`)).toBe("banger: uncommitted changes\nguest work");
    expect(git(repo, "show", "banger/web:b.txt")).toBe("changed in the guest, not committed");
    expect(git(repo, "show", "banger/web:guest-new.txt")).toBe("untracked in the guest");
    expect(git(repo, "show", "banger/web~1:c.txt")).toBe("c.txt staged then changed again");
    expect(git(repo, "ls-tree", "--name-only", "banger/web")).not.toContain("guest.log");
    expect(git(repo, "rev-parse", "banger/web~1")).toBe(git(g.dir, "rev-parse", "HEAD"));

    const again = await rejection(exportWorkspace({ shell: g.shell, to: repo, vmName: "web", guestDir: g.dir }));
    expect(again.code).toBe("already_exists");
    expect(again.hint).toContain("--force");
    expect(again.hint).toContain("--branch NAME");

    git(g.dir, "commit", "-q", "-am", "second guest commit");
    const forced = await exportWorkspace({ shell: g.shell, to: repo, vmName: "web", guestDir: g.dir, force: true });
    expect(forced).toMatchObject({ branch: "banger/web", commits: 2 });
    expect(git(repo, "log", "-1", "--format=%s", "banger/web")).toBe("banger: uncommitted changes");

    const other = await exportWorkspace({ shell: g.shell, to: repo, vmName: "web", branch: "topic/x", guestDir: g.dir });
    expect(other.branch).toBe("topic/x");
    expect(repoState(repo).status).toBe(hostBefore.status);
  });

  test("--patch writes a mailbox that git apply --check accepts at base", async () => {
    const g = guest();
    const { base } = await prepareWorkspace({ shell: g.shell, from: repo, guestDir: g.dir });
    git(g.dir, "add", "-A");
    git(g.dir, "commit", "-q", "-m", "guest work");
    writeFileSync(join(g.dir, "a.txt"), "patched again in the guest\n");
    const file = join(tmp, "work.patch");
    const r = await exportWorkspace({ shell: g.shell, to: repo, vmName: "web", patch: file, guestDir: g.dir });
    expect(r).toMatchObject({ branch: null, patch: file, commits: 1, uncommittedIncluded: true });
    const clone = join(tmp, "clone-at-base");
    git(tmp, "clone", "-q", repo, clone);
    git(clone, "checkout", "-q", base!);
    git(clone, "apply", "--check", file);
    git(clone, "-c", "user.name=T", "-c", "user.email=t@example.com", "am", "-q", file);
    expect(readFileSync(join(clone, "a.txt"), "utf8")).toBe("patched again in the guest\n");
    const e = await rejection(exportWorkspace({ shell: g.shell, to: repo, vmName: "web", patch: file, guestDir: g.dir }));
    expect(e.code).toBe("already_exists");
  });

  test("--patch never writes through a symlink planted at its name (or beside it)", async () => {
    const g = guest();
    await prepareWorkspace({ shell: g.shell, from: repo, guestDir: g.dir });
    writeFileSync(join(g.dir, "a.txt"), "guest change\n");
    const dir = mkdtempSync(join(tmp, "shared-"));
    const victim = join(tmp, "victim.txt");
    writeFileSync(victim, "precious\n");
    const file = join(dir, "out.patch");
    symlinkSync(victim, file);
    // The old fixed temp name, planted too: the temp file now has a random name made with O_EXCL.
    symlinkSync(victim, `${file}.banger-partial`);
    const e = await rejection(exportWorkspace({ shell: g.shell, to: repo, vmName: "web", patch: file, guestDir: g.dir }));
    expect(e.code).toBe("already_exists");
    await exportWorkspace({ shell: g.shell, to: repo, vmName: "web", patch: file, guestDir: g.dir, force: true });
    expect(readFileSync(victim, "utf8")).toBe("precious\n");
    expect(lstatSync(file).isSymbolicLink()).toBe(false);
    expect(readFileSync(file, "utf8")).toContain("guest change");
    expect(readdirSync(dir).sort()).toEqual(["out.patch", "out.patch.banger-partial"]);
  });

  test("a guest without changes says so and creates nothing", async () => {
    const clean = makeCommittedRepo(join(tmp, "clean"), { "f.txt": "x\n" });
    const g = guest();
    await prepareWorkspace({ shell: g.shell, from: clean, guestDir: g.dir });
    const r = await exportWorkspace({ shell: g.shell, to: clean, vmName: "idle", guestDir: g.dir });
    expect(r).toMatchObject({ branch: null, commits: 0, uncommittedIncluded: false });
    expect(r.summary).toContain("no changes in the guest");
    expect(git(clean, "branch", "--list", "banger/*")).toBe("");
  });

  test("--force never moves the branch the host has checked out", async () => {
    const host = join(tmp, "checked-out");
    mkdirSync(host);
    git(host, "init", "-q", "-b", "banger/busy");
    writeFileSync(join(host, "f.txt"), "x\n");
    git(host, "add", ".");
    git(host, "-c", "user.name=C", "-c", "user.email=c@example.com", "commit", "-q", "-m", "c");
    const g = guest();
    await prepareWorkspace({ shell: g.shell, from: host, guestDir: g.dir });
    writeFileSync(join(g.dir, "f.txt"), "changed\n");
    const before = repoState(host);
    const e = await rejection(exportWorkspace({ shell: g.shell, to: host, vmName: "busy", force: true, guestDir: g.dir }));
    expect(e.code).toBe("failed_precondition");
    expect(e.message).toContain("checked out");
    expect(repoState(host)).toEqual(before);
  });

  test("an invalid branch name is a usage error", async () => {
    const g = guest();
    const e = await rejection(exportWorkspace({ shell: g.shell, to: repo, vmName: "web", branch: "bad..name", guestDir: g.dir }));
    expect(e.code).toBe("invalid_argument");
  });
});
