/**
 * `vm cp [-r] SRC... DST`: tar over `vm exec`, so modes, directories and symlinks (kept as
 * links) travel the agent channel; `<vm>:/path` names the guest side. Like cp: into DST when
 * it is a directory, else the one SRC becomes DST.
 */
import { lstatSync, mkdtempSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import { posix } from "node:path";
import { BangerError } from "../errors.ts";
import { formatSize } from "../units.ts";
import { startExec } from "./exec-client.ts";

/** One operand: a host path, or a path in a VM. */
export type CpOperand = { vm: null; path: string } | { vm: string; path: string };

/** `web:/etc/hosts` is in VM web; `./a:b`, `/x` and `a` are host paths. */
export function parseOperand(arg: string): CpOperand {
  const m = /^([A-Za-z0-9][A-Za-z0-9.-]*):(.*)$/.exec(arg);
  if (!m) return { vm: null, path: arg };
  if (!m[2])
    throw new BangerError("invalid_argument", `${arg}: no path after the VM name`, {
      hint: `Write ${m[1]}:/path (an absolute guest path; relative ones start at /root).`,
    });
  return { vm: m[1]!, path: m[2].startsWith("/") ? m[2] : posix.join("/root", m[2]) };
}

/** What a copy does: which way, which VM, the sources and the destination. */
export interface CpPlan {
  direction: "in" | "out";
  vm: string;
  sources: string[];
  dest: string;
}

/** Checks the operands make one copy between the host and one VM. */
export function planCopy(args: string[]): CpPlan {
  if (args.length < 2)
    throw new BangerError("invalid_argument", "vm cp needs a source and a destination", {
      hint: "For example: banger vm cp ./notes.txt web:/root/ or banger vm cp -r web:/var/log ./logs",
    });
  const ops = args.map(parseOperand);
  const dest = ops.at(-1)!;
  const sources = ops.slice(0, -1);
  const remoteSources = new Set(sources.map((s) => s.vm));
  if (dest.vm && !remoteSources.has(null))
    throw new BangerError("invalid_argument", "vm cp copies between the host and a VM, not between two VMs", { hint: "Copy to the host first, then on." });
  if (remoteSources.size > 1 || (dest.vm === null && remoteSources.has(null))) {
    throw new BangerError("invalid_argument", "vm cp needs the VM on one side: either every source is <vm>:/path, or the destination is", {
      hint: "For example: banger vm cp a.txt b.txt web:/root/",
    });
  }
  if (dest.vm) return { direction: "in", vm: dest.vm, sources: sources.map((s) => resolve(s.path)), dest: dest.path };
  return { direction: "out", vm: sources[0]!.vm!, sources: sources.map((s) => s.path), dest: resolve(dest.path) };
}

/** The tar arguments naming each source relative to its directory. */
export function tarMembers(sources: string[], path = posix): string[] {
  return sources.flatMap((s) => {
    const trimmed = s.length > 1 ? s.replace(/\/+$/, "") : s;
    return ["-C", path.dirname(trimmed), path.basename(trimmed) || "."];
  });
}

// Extracts stdin into $1 when it is a directory; else the one source ($3) becomes $1 through a
// temporary directory beside it, so a failed copy leaves nothing half-written under DST.
const EXTRACT_REMOTE = `dst=$1; n=$2; base=$3
if [ -d "$dst" ]; then exec tar -xpf - --no-same-owner -C "$dst"; fi
[ "$n" = 1 ] || { echo "banger: $dst is not a directory in the guest (copying $n sources needs one)" >&2; exit 2; }
parent=$(dirname -- "$dst")
[ -d "$parent" ] || { echo "banger: there is no directory $parent in the guest" >&2; exit 2; }
t=$(mktemp -d "$parent/.banger-cp.XXXXXX") || exit 1
tar -xpf - --no-same-owner -C "$t" && mv -T -- "$t/$base" "$dst"; s=$?; rm -rf -- "$t"; exit $s`;

// Checks each source ($2.. in pairs dir, base), then streams one tar of them all.
const ARCHIVE_REMOTE = `r=$1; shift; n=$#; i=0
while [ $i -lt $n ]; do
  d=$1; b=$2; shift 2; p="\${d%/}/$b"
  [ -e "$p" ] || [ -L "$p" ] || { echo "banger: there is no $p in the guest" >&2; exit 2; }
  if [ -d "$p" ] && [ ! -L "$p" ] && [ "$r" != 1 ]; then echo "banger: $p is a directory; use vm cp -r" >&2; exit 2; fi
  set -- "$@" -C "$d" "$b"; i=$((i+2))
done
exec tar -cf - "$@"`;

/** A progress line on a TTY for copies that take a while; a no-op otherwise. */
export function progressLine(total: number | null, stream: NodeJS.WriteStream = process.stderr) {
  let bytes = 0;
  const started = performance.now();
  let shown = false;
  const render = () => {
    const s = (performance.now() - started) / 1000;
    if (s < 1) return;
    shown = true;
    const rate = `${formatSize(Math.round(bytes / s))}/s`;
    stream.write(`\r\x1b[K  ${formatSize(bytes)}${total ? ` of ${formatSize(total)} (${Math.min(100, Math.round((bytes / total) * 100))}%)` : ""}, ${rate}`);
  };
  const timer = stream.isTTY ? setInterval(render, 250) : null;
  return {
    add: (n: number) => void (bytes += n),
    stop: () => {
      if (timer) clearInterval(timer);
      if (shown) stream.write("\r\x1b[K");
    },
  };
}

function localSize(paths: string[]): number {
  const r = Bun.spawnSync(["du", "-sbc", ...paths]);
  return Number(/(\d+)\s+total/.exec(r.stdout.toString())?.[1] ?? 0);
}

async function* counted(stream: ReadableStream<Uint8Array>, add: (n: number) => void) {
  for await (const chunk of stream) {
    add(chunk.length);
    yield chunk;
  }
}

/** The guest's stderr, for the error message: only its last 64 KiB are kept (a guest may write without end). */
const STDERR_KEEP = 64 * 1024;
function stderrCollector() {
  let text = "";
  const decoder = new TextDecoder();
  const take = (c: Uint8Array) => {
    text += decoder.decode(c, { stream: true });
    if (text.length > STDERR_KEEP) text = text.slice(-STDERR_KEEP);
  };
  return { take, text: () => text.trim() };
}

function failed(what: string, stderr: string, code: number): BangerError {
  const line =
    stderr
      .split("\n")
      .filter(Boolean)
      .at(-1)
      ?.replace(/^banger: /, "") ?? `exit code ${code}`;
  const hint = stderr.includes("use vm cp -r")
    ? "Add -r to copy directories."
    : /there is no|not a directory/.test(line)
      ? "Check the path; `banger vm exec <vm> -- ls -la <dir>` shows what is there."
      : `That is what tar on the ${what} said; a copy to a new name leaves nothing half-written there.`;
  return new BangerError(/there is no/.test(line) ? "not_found" : "failed_precondition", `vm cp: ${line}`, { hint });
}

/** Host to guest: a local tar into the remote extract script. */
async function copyIn(execSocket: string, plan: CpPlan, recursive: boolean) {
  for (const s of plan.sources) {
    const st = lstatSync(s, { throwIfNoEntry: false });
    if (!st) throw new BangerError("not_found", `vm cp: there is no ${s} on the host`);
    if (st.isDirectory() && !recursive) throw new BangerError("invalid_argument", `vm cp: ${s} is a directory`, { hint: "Add -r to copy directories." });
  }
  const progress = progressLine(process.stderr.isTTY ? localSize(plan.sources) : null);
  const tar = Bun.spawn(["tar", "-cf", "-", ...tarMembers(plan.sources)], { stdout: "pipe", stderr: "pipe" });
  const err = stderrCollector();
  try {
    const base = basename(plan.sources[0]!.replace(/\/+$/, "")) || "/";
    const argv = ["sh", "-c", EXTRACT_REMOTE, "sh", plan.dest, String(plan.sources.length), base];
    const handle = await startExec(
      execSocket,
      { vm: plan.vm, argv, bulk: true },
      { stdin: counted(tar.stdout, progress.add), stdout: () => {}, stderr: err.take },
    );
    const exit = await handle.done;
    const local = await tar.exited;
    if (exit.code !== 0) throw failed("guest", err.text(), exit.code);
    if (local !== 0) throw failed("host", await new Response(tar.stderr).text(), local);
  } finally {
    progress.stop();
    tar.kill();
  }
}

/** Where a download extracts, and how it lands at DST afterwards. */
function localTarget(plan: CpPlan): { dir: string; finish(): void; abort(): void } {
  const isDir = statSync(plan.dest, { throwIfNoEntry: false })?.isDirectory();
  if (isDir) return { dir: plan.dest, finish: () => {}, abort: () => {} };
  if (plan.sources.length > 1)
    throw new BangerError("invalid_argument", `vm cp: ${plan.dest} is not a directory (copying ${plan.sources.length} sources needs one)`);
  const parent = dirname(plan.dest);
  if (!statSync(parent, { throwIfNoEntry: false })?.isDirectory()) throw new BangerError("not_found", `vm cp: there is no directory ${parent} on the host`);
  const tmp = mkdtempSync(`${parent}/.banger-cp.`);
  const base = posix.basename(plan.sources[0]!.replace(/\/+$/, "")) || "/";
  return {
    dir: tmp,
    finish: () => {
      renameSync(`${tmp}/${base}`, plan.dest);
      rmSync(tmp, { recursive: true, force: true });
    },
    abort: () => rmSync(tmp, { recursive: true, force: true }),
  };
}

/** Guest to host: the remote archive script into a local tar. */
async function copyOut(execSocket: string, plan: CpPlan, recursive: boolean) {
  const target = localTarget(plan);
  const tar = Bun.spawn(["tar", "-xpf", "-", "--no-same-owner", "-C", target.dir], { stdin: "pipe", stdout: "ignore", stderr: "pipe" });
  const progress = progressLine(null);
  const err = stderrCollector();
  let ok = false;
  try {
    const argv = ["sh", "-c", ARCHIVE_REMOTE, "sh", recursive ? "1" : "0", ...tarMembers(plan.sources).filter((a) => a !== "-C")];
    const stdout = async (chunk: Uint8Array) => {
      progress.add(chunk.length);
      tar.stdin.write(chunk);
      await tar.stdin.flush();
    };
    const handle = await startExec(execSocket, { vm: plan.vm, argv, bulk: true }, { stdout, stderr: err.take });
    const exit = await handle.done;
    await tar.stdin.end();
    const local = await tar.exited;
    if (exit.code !== 0) throw failed("guest", err.text(), exit.code);
    if (local !== 0) throw failed("host", await new Response(tar.stderr).text(), local);
    target.finish();
    ok = true;
  } finally {
    progress.stop();
    tar.kill();
    if (!ok) target.abort();
  }
}

/** Runs `vm cp`. */
export async function cpCommand(execSocket: string, args: string[], recursive: boolean, ready: () => Promise<void> = async () => {}): Promise<void> {
  const plan = planCopy(args);
  await ready();
  if (plan.direction === "in") await copyIn(execSocket, plan, recursive);
  else await copyOut(execSocket, plan, recursive);
}
