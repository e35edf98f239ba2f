import { copyFileSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import type { Runner } from "../host/runner.ts";
import { hostGitEnv, readOnlyGitEnv } from "./source.ts";
import { type GitObject, parseCatFileBatch } from "./files-sync.ts";

/** The host's working tree as git objects, made without touching its index, HEAD or refs. */
export interface HostSnapshot {
  /** A commit of the whole working tree (tracked, staged, unstaged, untracked-not-ignored), parent HEAD. */
  commit: string;
  tree: string;
  /** HEAD's commit, null before the first commit. */
  head: string | null;
  /** The branch HEAD points at (refs/heads/…), null when detached. */
  branch: string | null;
  /** The tree of what is staged (the index as it is), so the guest keeps the same staged/unstaged split. */
  staged: string;
}

const EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
const IDENTITY = { GIT_AUTHOR_NAME: "banger", GIT_AUTHOR_EMAIL: "banger@localhost", GIT_COMMITTER_NAME: "banger", GIT_COMMITTER_EMAIL: "banger@localhost" };

async function git(runner: Runner, top: string, args: string[], env: Record<string, string>, stdin?: string): Promise<string | null> {
  const r = await runner.run(["git", "-c", "advice.addEmbeddedRepo=false", "-C", top, ...args], { allowFailure: true, env, stdin });
  return r.code === 0 ? r.stdout.trim() : null;
}

/**
 * Snapshots the host checkout at `top` through a temporary copy of its index: `add -A`,
 * `write-tree`, `commit-tree`. Only new objects are written; index, HEAD and refs stay as they are.
 */
export async function snapshotHost(runner: Runner, top: string): Promise<HostSnapshot> {
  const dir = mkdtempSync(join(tmpdir(), "banger-snap-"));
  try {
    const index = join(dir, "index");
    const real = join(top, ".git", "index");
    if (existsSync(real)) copyFileSync(real, index);
    const env = { ...readOnlyGitEnv, ...IDENTITY, GIT_INDEX_FILE: index };
    const head = await git(runner, top, ["rev-parse", "-q", "--verify", "HEAD^{commit}"], env);
    const branch = await git(runner, top, ["symbolic-ref", "-q", "HEAD"], env);
    // A conflicted index has no tree; the guest then gets HEAD's tree as its staged state.
    const staged = (await git(runner, top, ["write-tree"], env)) ?? (head ? await git(runner, top, ["rev-parse", `${head}^{tree}`], env) : null) ?? EMPTY_TREE;
    const added = await runner.run(["git", "-c", "advice.addEmbeddedRepo=false", "-C", top, "add", "-A"], { allowFailure: true, env });
    if (added.code !== 0) throw snapError(top, added.stderr);
    const tree = await git(runner, top, ["write-tree"], env);
    if (tree === null) throw snapError(top, "git write-tree failed");
    const commit = await git(runner, top, ["commit-tree", tree, ...(head ? ["-p", head] : []), "-m", "banger: host working tree"], env);
    if (commit === null) throw snapError(top, "git commit-tree failed");
    return { commit, tree, head, branch: branch || null, staged };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function snapError(top: string, stderr: string): BangerError {
  return new BangerError("internal", `could not read the working tree of ${top}: ${stderr.trim().split("\n").slice(-3).join(" | ")}`, {
    hint: "Check that every file in the repository is readable and that `git status` works there.",
  });
}

/** Which of these object ids the host repository at `top` holds. */
export async function hostHas(runner: Runner, top: string, ids: string[]): Promise<Set<string>> {
  if (!ids.length) return new Set();
  const out = await git(runner, top, ["cat-file", "--batch-check=%(objectname)"], { ...readOnlyGitEnv }, ids.join("\n") + "\n");
  return new Set((out ?? "").split("\n").filter((l) => /^[0-9a-f]{40,64}$/.test(l)));
}

/** A running `git pack-objects` with the objects of `want` the guest lacks (it has `have`), thin. */
export function spawnPack(top: string, want: string | string[], have: string): { stdout: ReadableStream<Uint8Array>; done: Promise<void>; kill(): void } {
  const proc = Bun.spawn(["git", "-C", top, "pack-objects", "--revs", "--thin", "--stdout", "-q"], {
    stdin: new Blob([`${[want].flat().join("\n")}\n^${have}\n`]),
    stdout: "pipe",
    stderr: "pipe",
    env: hostGitEnv(),
  });
  const done = (async () => {
    const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
    if (code !== 0) throw new BangerError("internal", `git pack-objects in ${top} failed (exit ${code}): ${stderr.trim().split("\n").slice(-3).join(" | ")}`);
  })();
  return { stdout: proc.stdout, done, kill: () => proc.kill() };
}

/** The objects `ids` from the host repository (`git cat-file --batch`), or null when that fails. */
export async function catFile(top: string, ids: string[]): Promise<Map<string, GitObject> | null> {
  const proc = Bun.spawn(["git", "-C", top, "cat-file", "--batch"], {
    stdin: new Blob([`${ids.join("\n")}\n`]),
    stdout: "pipe",
    stderr: "ignore",
    env: hostGitEnv(),
  });
  const [out, code] = await Promise.all([new Response(proc.stdout).arrayBuffer().then((b) => new Uint8Array(b)), proc.exited]);
  if (code !== 0) return null;
  try {
    return parseCatFileBatch(out);
  } catch {
    return null;
  }
}
