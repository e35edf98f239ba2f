import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rejection } from "../testing/errors.ts";
import { syncWorkspace } from "./bring.ts";
import type { HostSnapshot } from "./hostsnap.ts";
import { plainTransfer } from "./plain.ts";
import { localShell } from "./shell.ts";
import { type GuestState, parseState, planSync } from "./sync.ts";
import { git, makeFixtureRepo, repoState } from "../testing/testrepo.ts";

const tmp = mkdtempSync(join(tmpdir(), "banger-sync-test-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
function guest() {
  const root = join(tmp, `guest${++n}`, "root");
  mkdirSync(root, { recursive: true });
  return { shell: localShell(root), dir: join(root, "repo") };
}

const STATE = ["status", "--porcelain=v1", "--untracked-files=all"];
const read = (dir: string, f: string) => readFileSync(join(dir, f), "utf8");

describe("syncWorkspace on a git repository", () => {
  const { repo } = makeFixtureRepo(join(tmp, "fx"));
  const g = guest();
  const sync = (mode?: "sync" | "replace" | "keep") => syncWorkspace({ shell: g.shell, from: repo, guestDir: g.dir, mode, vmName: "r" });

  test("first run prepares, a second with nothing new changes nothing", async () => {
    expect((await sync()).action).toBe("prepared");
    const again = await sync();
    expect(again).toMatchObject({ action: "unchanged", bytes: 0 });
  });

  test("edits, new and deleted files and a new commit arrive; the host repository is untouched", async () => {
    writeFileSync(join(repo, "b.txt"), "b.txt edited again on the host\n");
    writeFileSync(join(repo, "brand-new.txt"), "untracked on the host\n");
    rmSync(join(repo, "c.txt"));
    writeFileSync(join(repo, "debug.log"), "ignored, stays home\n");
    git(repo, "commit", "-q", "-m", "three", "--", "a.txt");
    const before = repoState(repo);
    const r = await sync();
    expect(repoState(repo)).toEqual(before);
    expect(r.action).toBe("synced");
    expect(read(g.dir, "b.txt")).toBe("b.txt edited again on the host\n");
    expect(read(g.dir, "brand-new.txt")).toBe("untracked on the host\n");
    expect(existsSync(join(g.dir, "c.txt"))).toBe(false);
    expect(existsSync(join(g.dir, "debug.log"))).toBe(false);
    expect(git(g.dir, "log", "--format=%H %s")).toBe(git(repo, "log", "--format=%H %s"));
    expect(git(g.dir, ...STATE)).toBe(before.status);
    expect(git(g.dir, "symbolic-ref", "HEAD")).toBe(git(repo, "symbolic-ref", "HEAD"));
    expect((await sync()).action).toBe("unchanged");
  });

  test("only working-tree files changed: they arrive as files with their new objects (valid loose objects), the next staged change as a pack", async () => {
    const refBefore = git(g.dir, "rev-parse", "refs/banger/synced");
    mkdirSync(join(repo, "fresh/deeper"), { recursive: true });
    writeFileSync(join(repo, "fresh/deeper/n.txt"), "new in a new directory\n");
    writeFileSync(join(repo, "b.txt"), "b.txt edited a fourth time\n");
    rmSync(join(repo, "brand-new.txt"));
    symlinkSync("b.txt", join(repo, "link-to-b"));
    const r = await sync();
    expect(r.action).toBe("synced");
    const [commit, tree] = read(g.dir, ".git/banger-synced").trim().split(" ");
    expect(commit).not.toBe(refBefore);
    expect(git(g.dir, "rev-parse", "refs/banger/synced")).toBe(commit!);
    expect(git(g.dir, "rev-parse", `${commit}^{tree}`)).toBe(tree!);
    git(g.dir, "fsck", "--no-dangling", "--connectivity-only");
    git(g.dir, "fsck", "--no-dangling");
    expect(read(g.dir, "fresh/deeper/n.txt")).toBe("new in a new directory\n");
    expect(read(g.dir, "b.txt")).toBe("b.txt edited a fourth time\n");
    expect(existsSync(join(g.dir, "brand-new.txt"))).toBe(false);
    expect(readlinkSync(join(g.dir, "link-to-b"))).toBe("b.txt");
    expect(git(g.dir, ...STATE)).toBe(git(repo, ...STATE));
    expect((await sync()).action).toBe("unchanged");
    // A file turned into a directory, then something staged: the pack path, from the files-only record.
    rmSync(join(repo, "link-to-b"));
    mkdirSync(join(repo, "link-to-b"));
    writeFileSync(join(repo, "link-to-b/inside.txt"), "was a link\n");
    expect((await sync()).action).toBe("synced");
    expect(read(g.dir, "link-to-b/inside.txt")).toBe("was a link\n");
    // Right after a files-only sync the guest edits a file: a refusal still names it (the synced tree is in its object store).
    writeFileSync(join(g.dir, "fresh/guest-own.txt"), "guest's\n");
    writeFileSync(join(repo, "b.txt"), "host edit while the guest has work\n");
    const refused = await rejection(sync());
    expect(refused.message).toContain("fresh/guest-own.txt");
    rmSync(join(g.dir, "fresh/guest-own.txt"));
    writeFileSync(join(repo, "b.txt"), "b.txt edited a fourth time\n");
    expect((await sync()).action).toBe("unchanged");
    git(repo, "add", "fresh/deeper/n.txt");
    expect((await sync()).action).toBe("synced");
    // The staged split arrived (the record names the host's staged tree).
    expect(read(g.dir, ".git/banger-synced").trim().split(" ")[2]).toBe(git(repo, "write-tree"));
    expect(git(g.dir, ...STATE)).toBe(git(repo, ...STATE));
    expect((await sync()).action).toBe("unchanged");
  });

  test("guest and host both changed: refused naming the three ways, both trees unchanged", async () => {
    writeFileSync(join(g.dir, "a.txt"), "guest's own edit\n");
    writeFileSync(join(g.dir, "build.out"), "guest build output, ignored? no: untracked\n");
    writeFileSync(join(repo, "b.txt"), "host edit 3\n");
    const host = repoState(repo);
    const guestStatus = git(g.dir, ...STATE);
    const err = await rejection(sync());
    expect(err.message).toContain("work of its own");
    expect(err.message).toContain("a.txt");
    expect(err.hint).toContain("banger vm workspace export r");
    expect(err.hint).toContain("--replace");
    expect(err.hint).toContain("--keep");
    expect(repoState(repo)).toEqual(host);
    expect(git(g.dir, ...STATE)).toBe(guestStatus);
    expect(read(g.dir, "b.txt")).not.toBe("host edit 3\n");
  });

  test("--keep runs on the guest's tree; --replace makes it match the host but keeps ignored files", async () => {
    expect((await sync("keep")).action).toBe("kept");
    expect(read(g.dir, "a.txt")).toBe("guest's own edit\n");
    writeFileSync(join(g.dir, "cache.log"), "ignored build cache\n");
    const r = await sync("replace");
    expect(r.action).toBe("synced");
    expect(git(g.dir, ...STATE)).toBe(git(repo, ...STATE));
    expect(read(g.dir, "a.txt")).toBe(read(repo, "a.txt"));
    expect(read(g.dir, "b.txt")).toBe("host edit 3\n");
    expect(existsSync(join(g.dir, "build.out"))).toBe(false);
    expect(read(g.dir, "cache.log")).toBe("ignored build cache\n");
  });

  test("guest work already exported to the host does not block the next run", async () => {
    git(g.dir, "-c", "user.name=G", "-c", "user.email=g@example.com", "commit", "-q", "--allow-empty", "-m", "guest commit");
    writeFileSync(join(repo, "b.txt"), "host edit 4\n");
    expect((await rejection(sync())).message).toContain("commits not exported");
    git(repo, "fetch", "-q", g.dir, "HEAD:refs/heads/banger/r");
    expect((await sync()).action).toBe("synced");
    expect(read(g.dir, "b.txt")).toBe("host edit 4\n");
    expect(git(g.dir, "rev-parse", "HEAD")).toBe(git(repo, "rev-parse", "HEAD"));
  });
});

test("syncWorkspace: a repository without commits, then its first commit on a detached HEAD", async () => {
  const fresh = join(tmp, "fresh");
  mkdirSync(fresh);
  git(fresh, "init", "-q");
  writeFileSync(join(fresh, "draft.txt"), "v1\n");
  const g = guest();
  const sync = () => syncWorkspace({ shell: g.shell, from: fresh, guestDir: g.dir });
  expect((await sync()).action).toBe("prepared");
  writeFileSync(join(fresh, "draft.txt"), "v2\n");
  expect((await sync()).action).toBe("synced");
  expect(read(g.dir, "draft.txt")).toBe("v2\n");
  git(fresh, "add", "-A");
  git(fresh, "-c", "user.name=F", "-c", "user.email=f@example.com", "commit", "-q", "-m", "first");
  git(fresh, "checkout", "-q", "--detach");
  writeFileSync(join(fresh, "more.txt"), "more\n");
  expect((await sync()).action).toBe("synced");
  expect(git(g.dir, "rev-parse", "HEAD")).toBe(git(fresh, "rev-parse", "HEAD"));
  expect(Bun.spawnSync(["git", "-C", g.dir, "symbolic-ref", "-q", "HEAD"]).exitCode).not.toBe(0);
  expect(git(g.dir, ...STATE)).toBe(git(fresh, ...STATE));
});

describe("syncWorkspace on a plain directory", () => {
  const dir = join(tmp, "plain");
  mkdirSync(join(dir, "src"), { recursive: true });
  writeFileSync(join(dir, "Makefile"), "all:\n\ttrue\n");
  writeFileSync(join(dir, "src", "main.c"), "int main(){}\n");
  writeFileSync(join(dir, "gone.txt"), "soon removed\n");
  const g = guest();
  const sync = (mode?: "sync" | "replace" | "keep") => syncWorkspace({ shell: g.shell, from: dir, guestDir: g.dir, mode });

  test("copied as it is, then only changes travel; deletions too", async () => {
    expect((await sync()).action).toBe("prepared");
    expect(read(g.dir, "src/main.c")).toBe("int main(){}\n");
    expect((await sync()).action).toBe("unchanged");
    writeFileSync(join(dir, "src", "main.c"), "int main(){return 1;}\n");
    rmSync(join(dir, "gone.txt"));
    mkdirSync(join(dir, "new"));
    writeFileSync(join(dir, "new", "x.txt"), "x\n");
    const r = await sync();
    expect(r.action).toBe("synced");
    expect(r.bytes).toBeLessThan(30_000);
    expect(read(g.dir, "src/main.c")).toBe("int main(){return 1;}\n");
    expect(read(g.dir, "new/x.txt")).toBe("x\n");
    expect(existsSync(join(g.dir, "gone.txt"))).toBe(false);
    expect((await sync()).action).toBe("unchanged");
  });

  test("a guest edit blocks the next sync unless --keep or --replace", async () => {
    writeFileSync(join(g.dir, "Makefile"), "guest edit of another size\n");
    writeFileSync(join(dir, "new", "x.txt"), "x changed on the host\n");
    const err = await rejection(sync());
    expect(err.message).toContain("Makefile");
    expect(err.hint).toContain("--replace");
    expect(err.hint).toContain("--keep");
    expect((await sync("keep")).action).toBe("kept");
    expect(read(g.dir, "Makefile")).toBe("guest edit of another size\n");
    expect((await sync("replace")).action).toBe("synced");
    expect(read(g.dir, "Makefile")).toBe("all:\n\ttrue\n");
    expect(read(g.dir, "new/x.txt")).toBe("x changed on the host\n");
  });

  test("a same-size edit is seen through its mtime", async () => {
    writeFileSync(join(dir, "Makefile"), "all:\n\tfals\n");
    utimesSync(join(dir, "Makefile"), new Date(), new Date(Date.now() + 5000));
    expect((await sync()).action).toBe("synced");
    expect(read(g.dir, "Makefile")).toBe("all:\n\tfals\n");
  });
});

describe("planSync", () => {
  const host: HostSnapshot = { commit: "S2", tree: "T2", head: "H1", branch: "refs/heads/main", staged: "I" };
  const clean: GuestState = { kind: "git", synced: "S1", syncedTree: "T1", base: "H1", head: "H1", tree: "T1", staged: null };
  const dirty: GuestState = { ...clean, tree: "Tg" };
  const has = new Set(["S1"]);
  test.each([
    ["empty guest", { ...clean, kind: "empty" }, "sync", has, "prepare"],
    ["clean guest, host changed", clean, "sync", has, "apply"],
    ["clean guest, only host files changed (HEAD and staged as recorded)", { ...clean, staged: "I" }, "sync", has, "files"],
    ["clean guest, host staged something new", { ...clean, staged: "I0" }, "sync", has, "apply"],
    ["clean guest, host committed", { ...clean, staged: "I", base: "H0", head: "H0" }, "sync", has, "apply"],
    ["clean guest, host unchanged", { ...clean, syncedTree: "T2", tree: "T2" }, "sync", has, "unchanged"],
    ["dirty guest, host changed", dirty, "sync", has, "refuse"],
    ["dirty guest, host unchanged", { ...dirty, syncedTree: "T2" }, "sync", has, "unchanged"],
    ["guest commits, host changed", { ...clean, head: "G1" }, "sync", has, "refuse"],
    ["dirty guest, exported", dirty, "sync", new Set(["S1", "Tg", "H1"]), "force"],
    ["dirty guest, --replace", dirty, "replace", has, "force"],
    ["dirty guest, --keep", dirty, "keep", has, "keep"],
    ["host lacks the synced commit", clean, "sync", new Set<string>(), "reprepare"],
    ["no record of a sync, --replace", { ...clean, synced: null, syncedTree: null }, "replace", has, "reprepare"],
    ["no record of a sync", { ...clean, synced: null, syncedTree: null }, "sync", has, "refuse"],
    ["not a checkout", { ...clean, kind: "other" }, "sync", has, "refuse"],
  ] as const)("%s", (_n, g, mode, holds, action) => {
    expect(planSync(g as GuestState, host, mode, holds as Set<string>).action).toBe(action);
  });
});

test("plainTransfer: changed and new entries go, removed and retyped ones are deleted first, outermost only", () => {
  const guest = new Map([
    ["a", "f 1 1"],
    ["d", "d"],
    ["d/x", "f 1 1"],
    ["d/y", "f 1 1"],
    ["l", "l old"],
    ["t", "f 1 1"],
  ]);
  const host = new Map([
    ["a", "f 2 1"],
    ["l", "l new"],
    ["t", "d"],
    ["t/z", "f 1 1"],
    ["n", "f 1 1"],
  ]);
  expect(plainTransfer(host, guest)).toEqual({ send: ["a", "l", "n", "t", "t/z"], remove: ["d", "l", "t"] });
});

test("parseState keeps only object ids from the guest", () => {
  const id = "a".repeat(40);
  expect(parseState(`kind=git\nsynced=${id}\nsyncedTree=$(reboot)\nbase=\nhead=${id}; rm -rf /\ntree=${id}\n`)).toEqual({
    kind: "git",
    synced: id,
    syncedTree: null,
    base: null,
    head: null,
    tree: id,
    staged: null,
  });
  // The record of a files-only sync wins over the refs it did not update.
  const [c, t, i] = ["c".repeat(40), "d".repeat(40), "e".repeat(40)];
  expect(parseState(`kind=git\nsynced=${id}\nsyncedTree=${id}\nfileSynced=${c}\nfileTree=${t}\nstaged=${i}\ntree=${t}\n`)).toMatchObject({
    synced: c,
    syncedTree: t,
    staged: i,
  });
  expect(() => parseState("kind=weird\n")).toThrow(/unexpected workspace state/);
});
