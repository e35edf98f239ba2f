import { randomBytes } from "node:crypto";
import { closeSync, constants, lstatSync, mkdtempSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { hostRunner, type Runner } from "../host/runner.ts";
import { DEFAULT_GUEST_DIR, lastLines } from "./prepare.ts";
import type { GuestShell } from "./shell.ts";
import { bundleScript, EXPORT_REF, type GuestSnapshot, patchScript, snapshotGuest } from "./snapshot.ts";
import { readOnlyGitEnv } from "./source.ts";

export interface ExportOptions {
  shell: GuestShell;
  /** A path inside the host repository that receives the work. */
  to: string;
  vmName: string;
  /** Branch to create; default banger/<vmName>. */
  branch?: string;
  /** Write a patch mailbox to this file instead of creating a branch. */
  patch?: string;
  /** Overwrite an existing branch or patch file. */
  force?: boolean;
  guestDir?: string;
}

export interface ExportResult {
  /** The branch written, or null in patch mode or when there was nothing to export. */
  branch: string | null;
  patch: string | null;
  /** Commits the guest made since prepare (the temporary one for uncommitted changes not counted). */
  commits: number;
  uncommittedIncluded: boolean;
  base: string | null;
  tip: string | null;
  /** One line for humans, e.g. "banger/web: 2 commits + uncommitted changes". */
  summary: string;
}

/**
 * Brings the guest's commits and uncommitted changes back to the host repository as a
 * branch (fetched from a git bundle, so the host's working tree, index and HEAD are never
 * touched) or as a patch file.
 */
export async function exportWorkspace(opts: ExportOptions, deps: { runner?: Runner } = {}): Promise<ExportResult> {
  const runner = deps.runner ?? hostRunner;
  const guestDir = opts.guestDir ?? DEFAULT_GUEST_DIR;
  const top = await hostTop(runner, opts.to);
  const branch = opts.patch ? null : (opts.branch ?? `banger/${opts.vmName}`);
  if (branch !== null) await checkBranch(runner, top, branch, opts.force ?? false);
  if (opts.patch && pathTaken(opts.patch) && !opts.force) {
    throw new BangerError("already_exists", `${opts.patch} already exists`, { hint: "Use --force to overwrite it, or --patch with another file name." });
  }
  const snap = await snapshotGuest(opts.shell, guestDir);
  const result = {
    branch,
    patch: opts.patch ?? null,
    commits: snap.count - (snap.dirty ? 1 : 0),
    uncommittedIncluded: snap.dirty,
    base: snap.base,
    tip: snap.tip,
  };
  if (snap.count === 0 || snap.tip === null) {
    const since = snap.base ? `since ${snap.base.slice(0, 12)}` : "at all";
    return { ...result, branch: null, patch: null, summary: `no changes in the guest ${since}; nothing exported` };
  }
  if (opts.patch) await writePatch(opts.shell, guestDir, snap, opts.patch);
  else await fetchBundle(runner, opts.shell, guestDir, snap, top, branch!, opts.force ?? false);
  return { ...result, summary: `${opts.patch ?? branch}: ${describe(result.commits, snap.dirty)}` };
}

function describe(commits: number, dirty: boolean): string {
  const c = `${commits} commit${commits === 1 ? "" : "s"}`;
  return dirty ? (commits ? `${c} + uncommitted changes` : "uncommitted changes") : c;
}

async function hostTop(runner: Runner, path: string): Promise<string> {
  const r = await runner.run(["git", "-C", path, "rev-parse", "--show-toplevel"], { allowFailure: true, env: readOnlyGitEnv });
  if (r.code !== 0) {
    throw new BangerError("failed_precondition", `${path} is not inside a git repository`, {
      hint: "Export into the repository the workspace was prepared from (--to PATH).",
    });
  }
  return r.stdout.trim();
}

/** Refuses a malformed branch name, or an existing branch without force. */
async function checkBranch(runner: Runner, top: string, branch: string, force: boolean): Promise<void> {
  const ok = await runner.run(["git", "check-ref-format", "--branch", branch], { allowFailure: true });
  if (ok.code !== 0)
    throw new BangerError("invalid_argument", `"${branch}" is not a valid branch name`, { hint: "Pass --branch NAME with a valid git branch name." });
  const r = await runner.run(["git", "-C", top, "rev-parse", "-q", "--verify", `refs/heads/${branch}`], { allowFailure: true, env: readOnlyGitEnv });
  if (r.code === 0 && !force) {
    throw new BangerError("already_exists", `branch ${branch} already exists in ${top}`, {
      hint: "Use --force to overwrite it, or --branch NAME to export to another branch.",
    });
  }
}

/** Streams the guest's bundle to a host temp file (only the new objects), then fetches it into the branch. */
async function fetchBundle(runner: Runner, shell: GuestShell, guestDir: string, snap: GuestSnapshot, top: string, branch: string, force: boolean) {
  const dir = mkdtempSync(join(tmpdir(), "banger-export-"));
  try {
    const file = join(dir, "work.bundle");
    await streamToFile(shell, bundleScript(guestDir, snap), file, "bundling the guest's commits");
    const refspec = `${force ? "+" : ""}${EXPORT_REF}:refs/heads/${branch}`;
    // No auto-gc or maintenance: the export must not rewrite anything else in the host repository.
    const quiet = ["-c", "gc.auto=0", "-c", "maintenance.auto=false", "-c", "fetch.writeCommitGraph=false"];
    const argv = ["git", ...quiet, "-C", top, "fetch", "--quiet", "--no-tags", "--no-prune", "--no-write-fetch-head", "--no-recurse-submodules", file, refspec];
    const r = await runner.run(argv, { allowFailure: true });
    if (r.code !== 0) throw fetchError(r.stderr, top, branch, snap);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function fetchError(stderr: string, top: string, branch: string, snap: GuestSnapshot): BangerError {
  if (/prerequisite/i.test(stderr)) {
    return new BangerError("failed_precondition", `${top} lacks the workspace's base commit ${snap.base}`, {
      hint: "Export into the repository the workspace was prepared from, or use --patch FILE.",
    });
  }
  if (/checked out/i.test(stderr)) {
    return new BangerError("failed_precondition", `branch ${branch} is checked out in ${top}; overwriting it would change the working tree`, {
      hint: "Switch the host checkout to another branch, or export with --branch NAME.",
    });
  }
  return new BangerError("internal", `git fetch of the guest's work into ${top} failed: ${lastLines(stderr)}`);
}

/** True when anything, even a dangling symlink, has the name. */
function pathTaken(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * A new file of our own beside `path`: a random name, created exclusively and never through a
 * symlink, so nothing another user planted in a shared directory is written to.
 */
export function createExclusive(path: string): { file: string; fd: number } {
  const file = `${path}.banger-partial-${randomBytes(6).toString("hex")}`;
  const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o666);
  return { file, fd };
}

/** Most bytes an export takes from the guest (a bundle or a patch); a guest streaming without end is stopped there. */
export const MAX_EXPORT_BYTES = 4 * 1024 ** 3;

/** Wraps a sink so that more than `max` bytes throws a clear error (which ends the guest command). */
export function cappedSink(take: (c: Uint8Array) => void, what: string, max = MAX_EXPORT_BYTES): (c: Uint8Array) => void {
  let size = 0;
  return (c) => {
    size += c.length;
    if (size > max) {
      throw new BangerError(
        "failed_precondition",
        `${what} passed ${Math.round(max / 1024 ** 2)} MiB, the most banger takes from a guest; it was stopped and nothing was written`,
        {
          hint: "Commit large files outside the workspace (or with git-lfs), or copy them out with `banger vm cp`.",
        },
      );
    }
    take(c);
  };
}

async function writePatch(shell: GuestShell, guestDir: string, snap: GuestSnapshot, path: string): Promise<void> {
  const { file: tmp, fd } = createExclusive(path);
  try {
    const r = await shell.exec(patchScript(guestDir, snap), { onStdout: cappedSink((c) => void writeSync(fd, c), "the patch") });
    if (r.code !== 0) throw new BangerError("internal", `writing the patch in the guest failed (exit ${r.code}): ${lastLines(r.stderr)}`);
    closeSync(fd);
    // Renamed into place only when complete, so a failure never leaves half a patch under the
    // real name; rename replaces a symlink at that name rather than writing through it.
    renameSync(tmp, path);
  } finally {
    try {
      closeSync(fd);
    } catch {}
    rmSync(tmp, { force: true });
  }
}

async function streamToFile(shell: GuestShell, script: string, file: string, what: string): Promise<void> {
  const sink = Bun.file(file).writer();
  let r;
  try {
    r = await shell.exec(script, { onStdout: cappedSink((c) => void sink.write(c), "the guest's bundle") });
  } finally {
    await sink.end();
  }
  if (r.code !== 0) throw new BangerError("internal", `${what} in the guest failed (exit ${r.code}): ${lastLines(r.stderr)}`);
}
