import { lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import type { Runner } from "../host/runner.ts";
import { envWithoutGit, type GuestResult, type GuestShell } from "./shell.ts";

/** What prepare needs to know about the host repository; every probe here is read-only. */
export interface SourceRepo {
  /** The repository's top-level directory. */
  top: string;
  /** HEAD's commit, or null on a branch with no commits yet. */
  head: string | null;
  /** Effective user.name / user.email as the repo sees them (local, global or system). */
  userName: string | null;
  userEmail: string | null;
}

// Read-only git: never take the index lock or refresh the index as a side effect.
export const readOnlyGitEnv = { GIT_OPTIONAL_LOCKS: "0" };

/** The environment for a git process spawned on the host's repository: no inherited GIT_* variables, no optional locks. */
export function hostGitEnv(): Record<string, string> {
  return { ...envWithoutGit(), ...readOnlyGitEnv };
}

async function git(runner: Runner, dir: string, args: string[]): Promise<string | null> {
  const r = await runner.run(["git", "-C", dir, ...args], { allowFailure: true, env: readOnlyGitEnv });
  return r.code === 0 ? r.stdout.replace(/\n$/, "") : null;
}

/** Finds the repository at `path` and reads HEAD and the committer identity. */
export async function inspectSource(runner: Runner, path: string): Promise<SourceRepo> {
  const top = await git(runner, path, ["rev-parse", "--show-toplevel"]);
  if (top === null) {
    throw new BangerError("failed_precondition", `${path} is not inside a git repository`, {
      hint: "Run from a git checkout, pass --from PATH to one, or `git init` it first.",
    });
  }
  const gitDir = lstatSync(join(top, ".git"), { throwIfNoEntry: false });
  if (!gitDir?.isDirectory()) {
    throw new BangerError("failed_precondition", `${top} keeps its .git elsewhere (a linked worktree or a submodule checkout)`, {
      hint: "Prepare from the main checkout of the repository, whose .git is a directory.",
    });
  }
  return {
    top,
    head: await git(runner, top, ["rev-parse", "-q", "--verify", "HEAD^{commit}"]),
    userName: await git(runner, top, ["config", "user.name"]),
    userEmail: await git(runner, top, ["config", "user.email"]),
  };
}

/**
 * The NUL-separated list of paths (relative to the top) that make the working tree as
 * git sees it: tracked files that exist, untracked files that are not ignored, and the
 * whole .git directory. Submodules and untracked nested repositories appear as bare
 * directories; the archive is made with --no-recursion so their contents stay behind.
 */
export async function workingTreeList(runner: Runner, top: string): Promise<string> {
  const out = await git(runner, top, ["ls-files", "-z", "--cached", "--others", "--exclude-standard"]);
  if (out === null) throw new BangerError("internal", `git ls-files failed in ${top}`);
  const seen = new Set<string>();
  const names: string[] = [];
  for (const name of out.split("\0")) {
    // A path listed twice is a merge conflict's stages; a vanished one is an unstaged delete.
    if (!name || seen.has(name)) continue;
    seen.add(name);
    if (lstatSync(join(top, name), { throwIfNoEntry: false })) names.push(name);
  }
  return [".git", ...gitDirEntries(top), ...names].join("\0") + "\0";
}

function gitDirEntries(top: string): string[] {
  const entries = readdirSync(join(top, ".git"), { recursive: true, encoding: "utf8" });
  // A lock file copied mid-operation would block every git command in the guest.
  return entries.filter((e) => !e.endsWith(".lock")).map((e) => `.git/${e}`);
}

/** A running tar on the host whose stdout is the archive. */
export interface TarStream {
  stdout: ReadableStream<Uint8Array>;
  /** Resolves when tar has exited; rejects with what it said when it failed. */
  done: Promise<void>;
  /** Stops tar when the receiving side gave up. */
  kill(): void;
}

/** Starts the host tar: the listed paths, or with `list` null the whole tree (full copy). */
export function spawnTar(top: string, list: string | null): TarStream {
  const argv =
    list === null
      ? ["tar", "-c", "--numeric-owner", "-C", top, "."]
      : ["tar", "-c", "--numeric-owner", "--no-recursion", "--null", "--verbatim-files-from", "-C", top, "-T", "-"];
  const proc = Bun.spawn(argv, { stdin: list === null ? "ignore" : new Blob([list]), stdout: "pipe", stderr: "pipe" });
  const done = (async () => {
    const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
    if (code !== 0) {
      throw new BangerError("internal", `tar of ${top} failed (exit ${code}): ${stderr.trim().split("\n").slice(-3).join(" | ")}`, {
        hint: "Check that every file in the repository is readable by the banger user.",
      });
    }
  })();
  return { stdout: proc.stdout, done, kill: () => proc.kill() };
}

/**
 * Streams a host process's stdout into a guest script's stdin, counting bytes. The host's
 * failure explains a truncated stream better than the guest's complaint, unless `guestFirst`
 * says the guest stopped reading on purpose (then the host's complaint is beside the point).
 */
export async function streamInto(
  shell: GuestShell,
  script: string,
  src: TarStream,
  guestFirst?: (r: GuestResult) => boolean,
): Promise<{ r: GuestResult; bytes: number }> {
  let bytes = 0;
  const counted = src.stdout.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        bytes += chunk.byteLength;
        ctl.enqueue(chunk);
      },
    }),
  );
  const [sent, got] = await Promise.allSettled([src.done, shell.exec(script, { stdin: counted }).finally(() => src.kill())]);
  if (got.status === "fulfilled" && guestFirst?.(got.value)) return { r: got.value, bytes };
  if (sent.status === "rejected") throw sent.reason;
  if (got.status === "rejected") throw got.reason;
  return { r: got.value, bytes };
}
