import { BangerError } from "../errors.ts";
import { hostRunner, type Runner } from "../host/runner.ts";
import { type GuestShell, shq, workspaceLock } from "./shell.ts";
import { type HostSnapshot, snapshotHost } from "./hostsnap.ts";
import { inspectSource, spawnTar, type SourceRepo, streamInto, workingTreeList } from "./source.ts";

/** The ref in the guest checkout that remembers which host commit the workspace started from. */
export const BASE_REF = "refs/banger/base";

/** The ref in the guest that holds the host snapshot (working tree as a commit) the checkout last matched. */
export const SYNCED_REF = "refs/banger/synced";

/**
 * The last sync as the host made it: "<commit> <tree> <staged tree>". Written by the shell's own
 * printf (no process), it is what a sync that only brings files updates instead of the refs.
 */
export const SYNCED_FILE = ".git/banger-synced";

/** Sh (builtins only) that records a sync of `snap` in SYNCED_FILE. */
export function recordSynced(snap: { commit: string; tree: string; staged: string }): string {
  return `printf '%s %s %s\\n' ${snap.commit} ${snap.tree} ${snap.staged} > ${SYNCED_FILE}`;
}

/** Where the workspace lands in the guest unless told otherwise. */
export const DEFAULT_GUEST_DIR = "/root/repo";

export interface PrepareOptions {
  shell: GuestShell;
  /** A path inside the host repository. */
  from: string;
  /** Copy everything under the top, ignored files and submodule contents included. */
  fullCopy?: boolean;
  guestDir?: string;
  /** Replace a non-empty guestDir instead of refusing (the guest's work there is lost). */
  replace?: boolean;
}

export interface PrepareDeps {
  runner?: Runner;
  now?: () => number;
}

export interface PrepareResult {
  guestDir: string;
  /** The host repository's top-level directory. */
  source: string;
  /** The host commit the workspace starts from (null for a repository without commits). */
  base: string | null;
  fullCopy: boolean;
  /** Size of the archive streamed into the guest. */
  bytes: number;
  ms: number;
}

/**
 * Copies the host repository's working tree (history, staged, unstaged and untracked
 * files; ignored files only with fullCopy) into the guest in one streamed tar, then sets
 * the checkout's identity and records the base commit. The host repository is only read.
 */
export async function prepareWorkspace(opts: PrepareOptions, deps: PrepareDeps = {}): Promise<PrepareResult> {
  const runner = deps.runner ?? hostRunner;
  const now = deps.now ?? Date.now;
  const started = now();
  const guestDir = opts.guestDir ?? DEFAULT_GUEST_DIR;
  const src = await inspectSource(runner, opts.from);
  const replace = opts.replace ?? false;
  // Refuse early, before any bytes move; the unpack checks again under the lock (and replaces there).
  if (!replace) await refuseNonEmpty(opts.shell, guestDir);
  // Before the file list: the snapshot's new objects travel in the copied .git.
  const snap = await snapshotHost(runner, src.top);
  const list = opts.fullCopy ? null : await workingTreeList(runner, src.top);
  const { r, bytes } = await streamInto(opts.shell, unpackScript(guestDir, src, snap, replace), spawnTar(src.top, list), (g) => g.code === EXIT_TAKEN);
  // Another prepare got there first: the guest stopped reading.
  if (r.code === EXIT_TAKEN) throw notEmpty(guestDir);
  if (r.code !== 0) {
    throw new BangerError("internal", `unpacking the workspace into ${guestDir} failed (exit ${r.code}): ${lastLines(r.stderr)}`, {
      hint: "Check free space on the guest's work disk (df -h /root), then run prepare again with --replace.",
    });
  }
  return { guestDir, source: src.top, base: src.head, fullCopy: opts.fullCopy ?? false, bytes, ms: now() - started };
}

/** The guest script's exit code for "the directory holds a workspace already". */
const EXIT_TAKEN = 73;

const notEmpty = (dir: string) =>
  new BangerError("already_exists", `${dir} in the guest is not empty; preparing again would discard the work there`, {
    hint: "Export it first (banger vm workspace export), or prepare again with --replace to discard it.",
  });

/** Sh that refuses a non-empty directory (exit EXIT_TAKEN), or with replace empties it, then creates it. */
function takeDir(d: string, replace: boolean): string {
  return `if [ -d ${d} ] && [ -n "$(ls -A ${d})" ]; then ${replace ? `rm -rf ${d}` : `exit ${EXIT_TAKEN}`}; fi; mkdir -p ${d}`;
}

/** Refuses to overwrite a guest directory that holds something. */
async function refuseNonEmpty(shell: GuestShell, dir: string): Promise<void> {
  const r = await shell.exec(takeDir(shq(dir), false));
  if (r.code === EXIT_TAKEN) throw notEmpty(dir);
  if (r.code !== 0) throw new BangerError("internal", `could not create ${dir} in the guest: ${lastLines(r.stderr)}`);
}

/**
 * The guest side, under the workspace lock: take the directory (again: another prepare may
 * have filled it meanwhile), unpack the archive, then identity, base ref and a stat refresh.
 */
export function unpackScript(guestDir: string, src: SourceRepo, snap: HostSnapshot, replace = false): string {
  const d = shq(guestDir);
  const lines = ["set -e", workspaceLock(guestDir), takeDir(d, replace), `tar -x --no-same-owner -C ${d}`, `cd ${d}`];
  if (src.userName !== null) lines.push(`git config user.name ${shq(src.userName)}`);
  if (src.userEmail !== null) lines.push(`git config user.email ${shq(src.userEmail)}`);
  lines.push(src.head ? `git update-ref ${BASE_REF} ${src.head}` : `git update-ref -d ${BASE_REF} 2>/dev/null || true`);
  lines.push(`git update-ref ${SYNCED_REF} ${snap.commit}`, recordSynced(snap));
  // The copied index holds the host's stat data; refreshing it once makes the first `git status` fast.
  lines.push("git update-index -q --refresh >/dev/null 2>&1 || true");
  return lines.join("\n");
}

export function lastLines(text: string, n = 3): string {
  return text.trim().split("\n").slice(-n).join(" | ") || "no output";
}
