import { lstatSync, readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { lastLines } from "./prepare.ts";
import { type GuestShell, shq, workspaceLock } from "./shell.ts";

/**
 * A directory that is not a git repository, copied as it is and kept in step by a manifest:
 * path → type, size, mtime (whole seconds, what tar keeps) or link target. The guest keeps
 * the manifest of the last sync beside the workspace, so its own changes show on the next run.
 */
export type Manifest = Map<string, string>;

/** Above this many bytes to copy, the run says how much is coming and how to skip it. */
export const PLAIN_WARN_BYTES = 256 * 1024 * 1024;

/** The host directory's manifest; sockets, fifos and devices are left out. */
export function hostManifest(top: string): { manifest: Manifest; sizes: Map<string, number> } {
  const manifest: Manifest = new Map();
  const sizes = new Map<string, number>();
  for (const name of readdirSync(top, { recursive: true, encoding: "utf8" })) {
    const st = lstatSync(join(top, name), { throwIfNoEntry: false });
    if (!st) continue;
    if (st.isFile()) {
      manifest.set(name, `f ${st.size} ${Math.floor(st.mtimeMs / 1000)}`);
      sizes.set(name, st.size);
    } else if (st.isDirectory()) manifest.set(name, "d");
    else if (st.isSymbolicLink()) manifest.set(name, `l ${readlinkSync(join(top, name))}`);
  }
  return { manifest, sizes };
}

/** The guest's side of the manifest: `find` records of five NUL-ended fields (type, size, mtime, target, path). */
const FIND = `find . -mindepth 1 \\( -type f -o -type d -o -type l \\) -printf '%y\\0%s\\0%T@\\0%l\\0%P\\0'`;

export function parseFind(out: string): Manifest {
  const f = out.split("\0");
  const m: Manifest = new Map();
  for (let i = 0; i + 4 < f.length; i += 5) {
    const [type, size, mtime, target, path] = [f[i], f[i + 1], f[i + 2], f[i + 3], f[i + 4]];
    if (!path) continue;
    if (type === "f") m.set(path, `f ${size} ${Math.floor(Number(mtime))}`);
    else if (type === "d") m.set(path, "d");
    else if (type === "l") m.set(path, `l ${target}`);
  }
  return m;
}

function manifestFile(guestDir: string): string {
  const id = new Bun.CryptoHasher("sha256").update(guestDir).digest("hex").slice(0, 12);
  return `${parentOf(guestDir) || "/"}/.cache/banger/workspace-${id}.manifest`;
}

const SEPARATOR = "\0--stored--\0";

export interface PlainState {
  kind: "empty" | "plain" | "git";
  current: Manifest;
  /** null when the guest has no record of a sync (its directory was filled some other way). */
  stored: Manifest | null;
}

/** Reads the guest directory's manifest and the one recorded at the last sync. */
export async function readPlainState(shell: GuestShell, guestDir: string): Promise<PlainState> {
  const d = shq(guestDir);
  const m = shq(manifestFile(guestDir));
  const script = `set -e
if [ ! -d ${d} ] || [ -z "$(ls -A ${d})" ]; then printf 'kind=empty\\0'; exit 0; fi
if [ -d ${d}/.git ]; then printf 'kind=git\\0'; exit 0; fi
cd ${d}
printf 'kind=plain\\0'; ${FIND}; printf '${SEPARATOR.replaceAll("\0", "\\0")}'; cat ${m} 2>/dev/null || printf 'none'`;
  const r = await shell.exec(script);
  if (r.code !== 0) throw new BangerError("internal", `could not list ${guestDir} in the guest: ${lastLines(r.stderr)}`);
  const kind = r.stdout.slice(0, r.stdout.indexOf("\0")).replace("kind=", "");
  if (kind !== "empty" && kind !== "plain" && kind !== "git") throw new BangerError("internal", `unexpected listing from the guest: ${lastLines(r.stdout)}`);
  const rest = r.stdout.slice(r.stdout.indexOf("\0") + 1);
  const [cur, stored] = rest.includes(SEPARATOR) ? rest.split(SEPARATOR) : [rest, "none"];
  return { kind, current: parseFind(cur ?? ""), stored: stored === "none" ? null : parseFind(stored ?? "") };
}

/** Paths whose entry differs between two manifests, either side. */
export function manifestDiff(a: Manifest, b: Manifest): string[] {
  const out: string[] = [];
  for (const [p, v] of a) if (b.get(p) !== v) out.push(p);
  for (const p of b.keys()) if (!a.has(p)) out.push(p);
  return out.sort();
}

/** What to send (host entries the guest lacks or has differently) and what to remove first. */
export function plainTransfer(host: Manifest, guest: Manifest): { send: string[]; remove: string[] } {
  const send: string[] = [];
  const remove: string[] = [];
  for (const [p, v] of host) {
    const g = guest.get(p);
    if (g === v) continue;
    // A changed type or link target needs the old entry gone before tar writes the new one.
    if (g !== undefined && (g[0] !== v[0] || v[0] === "l")) remove.push(p);
    if (!(v === "d" && g === "d")) send.push(p);
  }
  for (const p of guest.keys()) if (!host.has(p)) remove.push(p);
  return { send: send.sort(), remove: dropNested(remove) };
}

function parentOf(p: string): string {
  const i = p.lastIndexOf("/");
  return i < 0 ? "" : p.slice(0, i);
}

/** Removing a directory removes what is under it: keep only the outermost paths. */
function dropNested(paths: string[]): string[] {
  const sorted = [...new Set(paths)].sort();
  const out: string[] = [];
  for (const p of sorted) if (!out.some((o) => p.startsWith(`${o}/`))) out.push(p);
  return out;
}

/** Sh that removes `remove`, unpacks the tar on stdin and records the new manifest. */
export function plainApplyScript(guestDir: string, remove: string[]): string {
  const d = shq(guestDir);
  const m = manifestFile(guestDir);
  const lines = ["set -e", workspaceLock(guestDir), `mkdir -p ${d}`, `cd ${d}`];
  for (let i = 0; i < remove.length; i += 200)
    lines.push(
      `rm -rf -- ${remove
        .slice(i, i + 200)
        .map((p) => shq(p))
        .join(" ")}`,
    );
  lines.push("tar -x --no-same-owner", `mkdir -p ${shq(parentOf(m))}`, `${FIND} > ${shq(m)}.tmp`, `mv ${shq(m)}.tmp ${shq(m)}`);
  return lines.join("\n");
}
