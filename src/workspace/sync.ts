import { BangerError } from "../errors.ts";
import { BASE_REF, lastLines, recordSynced, SYNCED_FILE, SYNCED_REF } from "./prepare.ts";
import type { HostSnapshot } from "./hostsnap.ts";
import { type GuestShell, shq, workspaceLock } from "./shell.ts";

/** The guest's temporary index: its working tree as the last state check saw it. */
const SYNC_INDEX = ".git/banger-sync.index";

/** What the guest directory holds, as the state check reports it. */
export interface GuestState {
  /** empty: nothing there yet; git: a checkout; other: files but no .git. */
  kind: "empty" | "git" | "other";
  synced: string | null;
  syncedTree: string | null;
  base: string | null;
  head: string | null;
  /** The guest's working tree (tracked and untracked-not-ignored) as a tree id. */
  tree: string | null;
  /** The host's staged tree at the last sync (from SYNCED_FILE; null when not recorded). */
  staged: string | null;
}

/** How a run treats a guest that has work of its own. */
export type SyncMode = "sync" | "replace" | "keep";

/**
 * What to do: prepare (nothing there), unchanged (host tree already there), files (only
 * working-tree files changed on the host: bring just them), apply (bring the host's changes,
 * commits and staged state as git objects), force (bring them, discarding the guest's), keep (leave the guest's tree),
 * refuse (the guest has work of its own), reprepare (no usable record of the last sync).
 */
export type SyncAction = "prepare" | "unchanged" | "files" | "apply" | "force" | "keep" | "refuse" | "reprepare";

export interface SyncPlan {
  action: SyncAction;
  /** The guest's tree or HEAD differ from the last sync (and the host does not hold them). */
  ownWork: boolean;
}

/** Decides what a run does; `hostHolds` says which guest objects the host repository has (exported work). */
export function planSync(g: GuestState, h: HostSnapshot, mode: SyncMode, hostHolds: Set<string>): SyncPlan {
  if (g.kind === "empty") return { action: "prepare", ownWork: false };
  const changed = g.kind !== "git" || !g.synced || g.head !== g.base || g.tree !== g.syncedTree;
  const exported = changed && g.kind === "git" && !!g.tree && hostHolds.has(g.tree) && (!g.head || hostHolds.has(g.head));
  const ownWork = changed && !exported;
  if (mode === "keep") return { action: "keep", ownWork };
  const usable = g.kind === "git" && !!g.synced && hostHolds.has(g.synced);
  if (mode === "replace") {
    if (!usable) return { action: "reprepare", ownWork };
    return { action: g.tree === h.tree && g.head === h.head ? "unchanged" : "force", ownWork };
  }
  const hostChanged = !g.synced || h.tree !== g.syncedTree || h.head !== g.base || (!!g.staged && g.staged !== h.staged);
  if (!hostChanged) return { action: "unchanged", ownWork };
  if (ownWork) return { action: "refuse", ownWork };
  if (!usable) return { action: "reprepare", ownWork };
  if (!changed && h.head === g.base && !!g.staged && g.staged === h.staged) return { action: "files", ownWork };
  return { action: changed ? "force" : "apply", ownWork };
}

/** Sh that reports the guest directory's state as key=value lines and leaves SYNC_INDEX for the apply step. */
export function stateScript(guestDir: string): string {
  const d = shq(guestDir);
  return `set -e
${workspaceLock(guestDir)}
if [ ! -d ${d} ] || [ -z "$(ls -A ${d})" ]; then echo kind=empty; exit 0; fi
cd ${d}
if [ ! -d .git ]; then echo kind=other; exit 0; fi
echo kind=git
# One git process when every ref is there (the usual case), one per ref otherwise.
if all=$(git rev-parse '${SYNCED_REF}^{commit}' '${SYNCED_REF}^{tree}' '${BASE_REF}^{commit}' 'HEAD^{commit}' 2>/dev/null); then
  set -- $all; echo "synced=$1"; echo "syncedTree=$2"; echo "base=$3"; echo "head=$4"
else
  v() { git rev-parse -q --verify "$1" 2>/dev/null || true; }
  synced=$(v '${SYNCED_REF}^{commit}')
  echo "synced=$synced"
  [ -z "$synced" ] || echo "syncedTree=$(v "$synced^{tree}")"
  echo "base=$(v '${BASE_REF}^{commit}')"
  echo "head=$(v 'HEAD^{commit}')"
fi
# The record of the last sync, when there is one, is newer than the refs (a files-only sync writes only it).
if [ -f ${SYNCED_FILE} ] && read -r fc ft fs < ${SYNCED_FILE}; then echo "fileSynced=$fc"; echo "fileTree=$ft"; echo "staged=$fs"; fi
if [ -f .git/index ]; then cp .git/index ${SYNC_INDEX}; else rm -f ${SYNC_INDEX}; fi
GIT_INDEX_FILE=${SYNC_INDEX} git -c advice.addEmbeddedRepo=false add -A
echo "tree=$(GIT_INDEX_FILE=${SYNC_INDEX} git write-tree)"
`;
}

export function parseState(stdout: string): GuestState {
  const kv = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) kv.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  const kind = kv.get("kind");
  if (kind !== "empty" && kind !== "git" && kind !== "other")
    throw new BangerError("internal", `unexpected workspace state from the guest: ${lastLines(stdout)}`);
  // Guest data is data: only object ids go on into scripts and comparisons.
  const opt = (k: string) => {
    const v = kv.get(k);
    return v && /^[0-9a-f]{40}([0-9a-f]{24})?$/.test(v) ? v : null;
  };
  const fromFile = opt("fileSynced") && opt("fileTree");
  return {
    kind,
    synced: fromFile ? opt("fileSynced") : opt("synced"),
    syncedTree: fromFile ? opt("fileTree") : opt("syncedTree"),
    base: opt("base"),
    head: opt("head"),
    tree: opt("tree"),
    staged: fromFile ? opt("staged") : null,
  };
}

export async function readGuestState(shell: GuestShell, guestDir: string): Promise<GuestState> {
  const r = await shell.exec(stateScript(guestDir));
  if (r.code !== 0) {
    throw new BangerError("failed_precondition", `could not read the workspace at ${guestDir} in the guest: ${lastLines(r.stderr)}`, {
      hint: "Look at the checkout with `git status` there, or replace it: banger vm workspace sync --replace.",
    });
  }
  return parseState(r.stdout);
}

/**
 * Sh that takes a thin pack of the host snapshot on stdin and moves the checkout from the
 * last synced tree to it: files, HEAD (same branch as the host), staged state, base and synced refs.
 * With force the guest's own changes are overwritten; ignored files (build caches) stay either way.
 * Every git process costs a guest under emulation a few hundred ms, so the script runs as few
 * as it can: the pack, one or two read-trees writing the real index, one update-ref, and
 * `git symbolic-ref` only when HEAD names another branch.
 */
export function applyScript(guestDir: string, g: GuestState, h: HostSnapshot, force: boolean): string {
  const idx = `GIT_INDEX_FILE=${SYNC_INDEX}`;
  const lines = ["set -e", workspaceLock(guestDir), `cd ${shq(guestDir)}`, "git unpack-objects -q"];
  lines.push(`if [ ! -f ${SYNC_INDEX} ]; then cp .git/index ${SYNC_INDEX}; ${idx} git add -A; fi`);
  // The temporary index has fresh stat data for every file; each read-tree keeps it for what it does not change.
  const toTree = force ? `--reset -u ${h.tree}` : `-m -u ${g.syncedTree} ${h.tree}`;
  if (h.staged === h.tree) lines.push(`${idx} git read-tree --index-output=.git/index ${toTree}`);
  else lines.push(`${idx} git read-tree ${toTree}`, `${idx} git read-tree --index-output=.git/index --reset ${h.staged}`);
  // The refs in one process: HEAD's branch (or a detached HEAD), base and synced.
  const refs: string[] = [];
  if (h.head && h.branch) refs.push(`update ${h.branch} ${h.head}`);
  else if (h.head) refs.push("option no-deref", `update HEAD ${h.head}`);
  if (h.head) refs.push(`update ${BASE_REF} ${h.head}`);
  else if (g.base) refs.push(`delete ${BASE_REF}`);
  refs.push(`update ${SYNCED_REF} ${h.commit}`);
  lines.push(`printf '%s\\n' ${refs.map(shq).join(" ")} | git update-ref --stdin`, recordSynced(h));
  // HEAD read by the shell itself: no process when it already names the branch.
  if (h.head && h.branch) lines.push(`read -r cur < .git/HEAD || cur=; [ "$cur" = ${shq(`ref: ${h.branch}`)} ] || git symbolic-ref HEAD ${shq(h.branch)}`);
  return lines.join("\n");
}

/**
 * Sh for a files-only sync: remove what the host deleted (or turned into another type), then
 * unpack the payload on stdin (changed files, new objects, the synced ref and the sync record;
 * see files-sync.ts). No git process: HEAD and the index are already what they should be.
 */
export function filesScript(guestDir: string, changes: Array<{ status: string; path: string }>): string {
  const lines = ["set -e", workspaceLock(guestDir), `cd ${shq(guestDir)}`];
  const gone = changes.filter((c) => c.status !== "A" && c.status !== "M").map((c) => shq(c.path));
  if (gone.length) lines.push(`rm -rf -- ${gone.join(" ")}`);
  lines.push("tar -x --no-same-owner");
  return lines.join("\n");
}
