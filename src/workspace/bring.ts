import { BangerError } from "../errors.ts";
import { hostRunner, type Runner } from "../host/runner.ts";
import { catFile, hostHas, type HostSnapshot, snapshotHost, spawnPack } from "./hostsnap.ts";
import { hostManifest, manifestDiff, PLAIN_WARN_BYTES, plainApplyScript, plainTransfer, readPlainState } from "./plain.ts";
import { DEFAULT_GUEST_DIR, lastLines, prepareWorkspace } from "./prepare.ts";
import { type GuestShell, shq } from "./shell.ts";
import { inspectSource, spawnTar, streamInto } from "./source.ts";
import { filesPayload, parseRawChanges } from "./files-sync.ts";
import { applyScript, filesScript, type GuestState, planSync, readGuestState, type SyncMode } from "./sync.ts";

export interface SyncOptions {
  shell: GuestShell;
  /** A path inside the host repository, or a directory that is not one. */
  from: string;
  guestDir?: string;
  fullCopy?: boolean;
  /** What to do when the guest has work of its own: refuse (sync), discard it (replace) or leave it (keep). */
  mode?: SyncMode;
  /** Named in the hints of a refusal. */
  vmName?: string;
  /** Lines for the user while the sync runs (a size warning, a kept tree). */
  onNote?: (line: string) => void;
}

export interface SyncResult {
  /** prepared: first copy; synced: host changes brought in; unchanged: nothing to bring; kept: the guest's tree left as it is. */
  action: "prepared" | "synced" | "unchanged" | "kept";
  kind: "git" | "plain";
  /** The host directory the workspace mirrors (the repository's top for git). */
  source: string;
  guestDir: string;
  bytes: number;
  ms: number;
}

/**
 * Makes the guest directory hold the host's current working tree: the first time a full
 * prepare, afterwards only what changed (a thin pack for a git repository, the changed files
 * for any other directory). The guest's own work is never overwritten unless mode is replace.
 */
export async function syncWorkspace(opts: SyncOptions, deps: { runner?: Runner; now?: () => number } = {}): Promise<SyncResult> {
  const runner = deps.runner ?? hostRunner;
  const now = deps.now ?? Date.now;
  const started = now();
  const guestDir = opts.guestDir ?? DEFAULT_GUEST_DIR;
  const isGit =
    (await runner.run(["git", "-C", opts.from, "rev-parse", "--show-toplevel"], { allowFailure: true, env: { GIT_OPTIONAL_LOCKS: "0" } })).code === 0;
  const r = isGit ? await syncGit(opts, guestDir, runner) : await syncPlain(opts, guestDir);
  return { ...r, guestDir, ms: now() - started };
}

type Partial = Omit<SyncResult, "guestDir" | "ms">;

async function syncGit(opts: SyncOptions, guestDir: string, runner: Runner): Promise<Partial> {
  const src = await inspectSource(runner, opts.from);
  const state = await readGuestState(opts.shell, guestDir);
  const prepare = async (replace: boolean): Promise<Partial> => {
    const p = await prepareWorkspace({ shell: opts.shell, from: opts.from, guestDir, fullCopy: opts.fullCopy, replace }, { runner });
    return { action: "prepared", kind: "git", source: p.source, bytes: p.bytes };
  };
  if (state.kind === "empty") return prepare(false);
  const snap = await snapshotHost(runner, src.top);
  const holds = await hostHas(
    runner,
    src.top,
    [state.tree, state.head, state.synced].filter((x): x is string => !!x),
  );
  const plan = planSync(state, snap, opts.mode ?? "sync", holds);
  const done = (action: Partial["action"], bytes = 0): Partial => ({ action, kind: "git", source: src.top, bytes });
  switch (plan.action) {
    case "prepare":
      return prepare(false);
    case "reprepare":
      return prepare(true);
    case "refuse":
      throw await ownWorkError(opts, guestDir, state);
    case "keep":
      if (plan.ownWork) opts.onNote?.(`running on the guest's tree as it is (${guestDir} has changes of its own; the host's are not brought in)`);
      return done("kept");
    case "unchanged":
      if (plan.ownWork) opts.onNote?.(`${guestDir} in the guest has changes of its own; the host has nothing new, so they stay`);
      return done("unchanged");
    case "files":
      return done("synced", await applyFiles(opts.shell, guestDir, src.top, state, snap, runner));
    default:
      return done("synced", await applyPack(opts.shell, guestDir, src.top, state, snap, plan.action === "force"));
  }
}

/** More changed paths, or more bytes, than this go as a pack (the files-only payload is built in memory). */
const FILES_MAX = 256;
const FILES_MAX_BYTES = 32 * 1024 * 1024;

/**
 * A files-only sync (the host changed working-tree files, not HEAD or the index): one tar with
 * the changed files and the snapshot's new objects (see files-sync.ts), and nothing but rm and
 * tar in the guest, which saves the git processes a pack costs under emulation. Any trouble
 * falls back to the pack, forced: the guest had no work of its own, so what a half-done unpack
 * left is the host's.
 */
async function applyFiles(shell: GuestShell, guestDir: string, top: string, state: GuestState, snap: HostSnapshot, runner: Runner): Promise<number> {
  const env = { GIT_OPTIONAL_LOCKS: "0" };
  const diff = await runner.run(["git", "-C", top, "diff-tree", "-r", "-z", "--no-renames", state.syncedTree!, snap.tree], { allowFailure: true, env });
  const changes = diff.code === 0 ? parseRawChanges(diff.stdout) : [];
  if (!changes.length || changes.length > FILES_MAX) return applyPack(shell, guestDir, top, state, snap, false);
  const revs = await runner.run(["git", "-C", top, "rev-list", "--objects", snap.commit, `^${state.synced}`], { allowFailure: true, env });
  const newIds = revs.stdout
    .split("\n")
    .map((l) => l.split(" ")[0]!)
    .filter((id) => /^[0-9a-f]{40,64}$/.test(id));
  const blobs = changes.filter((c) => c.status !== "D").map((c) => c.newId);
  const objects = revs.code === 0 ? await catFile(top, [...new Set([...newIds, ...blobs])]) : null;
  const size = objects ? [...objects.values()].reduce((n, o) => n + o.data.length, 0) : Infinity;
  const tar = objects && size <= FILES_MAX_BYTES ? filesPayload(snap, changes, newIds, objects) : null;
  if (!tar) return applyPack(shell, guestDir, top, state, snap, false);
  const r = await shell.exec(filesScript(guestDir, changes), { stdin: tar });
  if (r.code === 0) return tar.length;
  return applyPack(shell, guestDir, top, state, snap, true);
}

async function applyPack(shell: GuestShell, guestDir: string, top: string, state: GuestState, snap: HostSnapshot, force: boolean): Promise<number> {
  const { r, bytes } = await streamInto(shell, applyScript(guestDir, state, snap, force), spawnPack(top, [snap.commit, snap.staged], state.synced!));
  if (r.code !== 0) {
    throw new BangerError("internal", `bringing the host's changes into ${guestDir} failed (exit ${r.code}): ${lastLines(r.stderr)}`, {
      hint: "Look at the checkout in the guest (git status), or start it afresh with --replace.",
    });
  }
  return bytes;
}

/** The refusal, naming what the guest changed and the three ways on. */
async function ownWorkError(opts: SyncOptions, guestDir: string, g: GuestState): Promise<BangerError> {
  const what: string[] = [];
  if (g.head !== g.base) what.push("commits not exported yet");
  if (g.tree && g.syncedTree && g.tree !== g.syncedTree) {
    const r = await opts.shell.exec(`cd ${shq(guestDir)} && git diff --name-only --no-renames ${g.syncedTree} ${g.tree} | head -5`);
    const files = r.stdout.trim().split("\n").filter(Boolean);
    if (files.length) what.push(`changed files: ${files.join(", ")}${files.length === 5 ? ", …" : ""}`);
  }
  if (!g.synced) what.push(g.kind === "git" ? "a checkout with no record of a sync" : "files that are not a git checkout");
  return ownWorkRefusal(guestDir, what, opts.vmName);
}

export function ownWorkRefusal(guestDir: string, what: string[], vmName = "VM"): BangerError {
  return new BangerError(
    "failed_precondition",
    `${guestDir} in ${vmName} has work of its own (${what.join("; ") || "changes"}); bringing the host's changes in would overwrite it`,
    {
      hint:
        `Choose one: \`banger vm workspace export ${vmName}\` first to keep it as a branch, then run again; ` +
        "--replace to discard the guest's work; --keep to run on the guest's tree as it is.",
    },
  );
}

async function syncPlain(opts: SyncOptions, guestDir: string): Promise<Partial> {
  const state = await readPlainState(opts.shell, guestDir);
  if (state.kind === "git") {
    throw new BangerError("failed_precondition", `${opts.from} is not a git repository, but ${guestDir} in the guest holds a git checkout`, {
      hint: "Run from the repository the workspace came from, or use another VM (--name) for this directory.",
    });
  }
  const mode = opts.mode ?? "sync";
  const changed = state.kind === "plain" ? (state.stored ? manifestDiff(state.stored, state.current) : ["(no record of a sync)"]) : [];
  if (mode === "keep") return { action: "kept", kind: "plain", source: opts.from, bytes: 0 };
  const { manifest, sizes } = hostManifest(opts.from);
  const { send, remove } = plainTransfer(manifest, state.current);
  if (!send.length && !remove.length) return { action: "unchanged", kind: "plain", source: opts.from, bytes: 0 };
  if (changed.length && mode !== "replace") {
    throw plainRefusal(guestDir, changed, opts.vmName);
  }
  const total = send.reduce((a, p) => a + (sizes.get(p) ?? 0), 0);
  if (total > PLAIN_WARN_BYTES)
    opts.onNote?.(`copying ${(total / 2 ** 20).toFixed(0)} MiB of ${opts.from} (not a git repository, so all of it); --no-workspace skips the copy`);
  const { r, bytes } = await streamInto(opts.shell, plainApplyScript(guestDir, remove), spawnTar(opts.from, send.join("\0") + (send.length ? "\0" : "")));
  if (r.code !== 0) {
    throw new BangerError("internal", `copying ${opts.from} into ${guestDir} failed (exit ${r.code}): ${lastLines(r.stderr)}`, {
      hint: "Check free space on the guest's work disk (df -h /root).",
    });
  }
  return { action: state.kind === "empty" ? "prepared" : "synced", kind: "plain", source: opts.from, bytes };
}

function plainRefusal(guestDir: string, changed: string[], vmName = "VM"): BangerError {
  return new BangerError(
    "failed_precondition",
    `${guestDir} in ${vmName} has changes of its own (${changed.slice(0, 5).join(", ")}${changed.length > 5 ? ", …" : ""}); ` +
      "bringing the host's files in would overwrite them",
    {
      hint:
        "Choose one: copy what you need out of the guest first (banger vm ssh), then run again; " +
        "--replace to discard the guest's changes; --keep to run on the guest's files as they are.",
    },
  );
}
