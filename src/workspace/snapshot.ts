import { BangerError } from "../errors.ts";
import { BASE_REF, lastLines } from "./prepare.ts";
import { type GuestShell, shq, workspaceLock } from "./shell.ts";

/** The ref the guest bundle is made from; it exists only while the bundle is written. */
export const EXPORT_REF = "refs/banger/export";

const EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/** The guest's work as commits: `tip` is HEAD, or a temporary commit on top of HEAD holding uncommitted changes. */
export interface GuestSnapshot {
  base: string | null;
  head: string | null;
  /** null when the guest has nothing at all (no commits and an empty tree). */
  tip: string | null;
  /** True when tip is the temporary commit of uncommitted changes. */
  dirty: boolean;
  /** Commits in base..tip, the temporary one included. */
  count: number;
}

/**
 * Commits the guest's uncommitted state (tracked and untracked-not-ignored) through a
 * temporary index file, so the guest's own index and working tree stay as they are.
 */
export function snapshotScript(guestDir: string): string {
  return `set -e
${workspaceLock(guestDir)}
cd ${shq(guestDir)}
base=$(git rev-parse -q --verify '${BASE_REF}^{commit}' || true)
head=$(git rev-parse -q --verify 'HEAD^{commit}' || true)
idx=$(mktemp)
trap 'rm -f "$idx"' EXIT
real=$(git rev-parse --git-path index)
if [ -f "$real" ]; then cp "$real" "$idx"; else rm -f "$idx"; fi
GIT_INDEX_FILE="$idx" git add -A
tree=$(GIT_INDEX_FILE="$idx" git write-tree)
dirty=1
if [ -n "$head" ] && [ "$tree" = "$(git rev-parse "$head^{tree}")" ]; then tip=$head; dirty=0
elif [ -z "$head" ] && [ "$tree" = ${EMPTY_TREE} ]; then tip=; dirty=0
else
  git config user.name >/dev/null || export GIT_AUTHOR_NAME=banger GIT_COMMITTER_NAME=banger
  git config user.email >/dev/null || export GIT_AUTHOR_EMAIL=banger@localhost GIT_COMMITTER_EMAIL=banger@localhost
  tip=$(git commit-tree "$tree" \${head:+-p "$head"} -m "banger: uncommitted changes")
fi
count=0
if [ -n "$tip" ]; then count=$(git rev-list --count "$tip" \${base:+"^$base"}); fi
echo "base=$base"; echo "head=$head"; echo "tip=$tip"; echo "dirty=$dirty"; echo "count=$count"
`;
}

/** Parses the key=value lines snapshotScript prints. */
export function parseSnapshot(stdout: string): GuestSnapshot {
  const kv = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) kv.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  const count = Number(kv.get("count"));
  if (!kv.has("tip") || !Number.isInteger(count)) throw new BangerError("internal", `unexpected snapshot output from the guest: ${lastLines(stdout)}`);
  const opt = (k: string) => kv.get(k) || null;
  return { base: opt("base"), head: opt("head"), tip: opt("tip"), dirty: kv.get("dirty") === "1", count };
}

/** Snapshots the guest checkout at guestDir. */
export async function snapshotGuest(shell: GuestShell, guestDir: string): Promise<GuestSnapshot> {
  const r = await shell.exec(snapshotScript(guestDir));
  if (r.code !== 0) {
    throw new BangerError("failed_precondition", `could not read the workspace at ${guestDir} in the guest: ${lastLines(r.stderr)}`, {
      hint: "Prepare it first (banger vm workspace prepare), or check the guest's checkout with `git status` there.",
    });
  }
  return parseSnapshot(r.stdout);
}

/** Streams `git bundle` of base..tip; the temporary ref is removed whatever happens. */
export function bundleScript(guestDir: string, snap: GuestSnapshot): string {
  return `set -e
cd ${shq(guestDir)}
git update-ref ${EXPORT_REF} ${snap.tip}
trap 'git update-ref -d ${EXPORT_REF}' EXIT
git bundle create -q - ${EXPORT_REF}${snap.base ? ` ^${snap.base}` : ""}`;
}

/** Streams a mailbox of patches for base..tip that `git am` (or `git apply`) takes at base. */
export function patchScript(guestDir: string, snap: GuestSnapshot): string {
  const range = snap.base ? `${snap.base}..${snap.tip}` : `--root ${snap.tip}`;
  return `cd ${shq(guestDir)} && git format-patch --stdout --binary ${range}`;
}
