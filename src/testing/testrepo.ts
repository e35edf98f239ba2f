import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Runs git synchronously for test fixtures; throws with stderr on failure. */
export function git(dir: string, ...args: string[]): string {
  const env: Record<string, string> = { GIT_OPTIONAL_LOCKS: "0" };
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("GIT_")) env[k] = v;
  const r = Bun.spawnSync(["git", "-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main", "-C", dir, ...args], { env });
  if (r.exitCode !== 0) throw new Error(`git ${args.join(" ")} in ${dir}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}

function write(dir: string, name: string, text: string): void {
  mkdirSync(join(dir, name, ".."), { recursive: true });
  writeFileSync(join(dir, name), text);
}

/** A repository with one commit holding `files` (name to text). */
export function makeCommittedRepo(dir: string, files: Record<string, string>): string {
  mkdirSync(dir, { recursive: true });
  git(dir, "init", "-q");
  for (const [name, text] of Object.entries(files)) write(dir, name, text);
  git(dir, "add", ".");
  git(dir, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "initial");
  return dir;
}

/**
 * A repository in every state prepare must carry: two commits, a submodule, a staged
 * change, an unstaged change, a file both staged and changed again, an unstaged delete,
 * an untracked file and ignored files.
 */
export function makeFixtureRepo(base: string): { repo: string; subSource: string } {
  const subSource = join(base, "subsrc");
  const repo = join(base, "host");
  mkdirSync(subSource, { recursive: true });
  mkdirSync(repo, { recursive: true });
  git(subSource, "init", "-q");
  write(subSource, "lib.txt", "submodule content\n");
  git(subSource, "add", ".");
  git(subSource, "-c", "user.name=Sub", "-c", "user.email=sub@example.com", "commit", "-q", "-m", "sub one");
  git(repo, "init", "-q");
  git(repo, "config", "user.name", "Ada Host");
  git(repo, "config", "user.email", "ada@example.com");
  write(repo, ".gitignore", "*.log\nbuild/\n");
  for (const f of ["a.txt", "b.txt", "c.txt", "d.txt"]) write(repo, f, `${f} v1\n`);
  write(repo, "dir/nested file.txt", "spaces in the name\n");
  git(repo, "add", ".");
  git(repo, "commit", "-q", "-m", "one");
  git(repo, "submodule", "add", "-q", `file://${subSource}`, "sub");
  write(repo, "a.txt", "a.txt v2\n");
  git(repo, "commit", "-q", "-am", "two");
  write(repo, "a.txt", "a.txt staged\n");
  write(repo, "c.txt", "c.txt staged\n");
  git(repo, "add", "a.txt", "c.txt");
  write(repo, "c.txt", "c.txt staged then changed again\n");
  write(repo, "b.txt", "b.txt unstaged\n");
  Bun.spawnSync(["rm", join(repo, "d.txt")]);
  write(repo, "new.txt", "untracked\n");
  write(repo, "debug.log", "ignored\n");
  write(repo, "build/out.bin", "ignored too\n");
  return { repo, subSource };
}

/** Everything about a repository that must not change: status, HEAD, index bytes, every ref. */
export function repoState(repo: string): { status: string; head: string; index: string; refs: string } {
  return {
    status: git(repo, "status", "--porcelain=v1", "--untracked-files=all"),
    head: readFileSync(join(repo, ".git", "HEAD"), "utf8"),
    index: createHash("sha256")
      .update(readFileSync(join(repo, ".git", "index")))
      .digest("hex"),
    refs: git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
  };
}

/** A committed repository of `mib` MiB of incompressible 128 KiB files in 32 directories (for timings). */
export function makeBulkRepo(dir: string, mib: number): void {
  mkdirSync(dir, { recursive: true });
  git(dir, "init", "-q");
  const buf = new Uint8Array(128 << 10);
  const files = Math.round((mib << 20) / buf.length);
  for (let i = 0; i < files; i++) {
    // getRandomValues fills at most 64 KiB per call.
    for (let o = 0; o < buf.length; o += 65536) crypto.getRandomValues(buf.subarray(o, o + 65536));
    mkdirSync(join(dir, `d${i % 32}`), { recursive: true });
    writeFileSync(join(dir, `d${i % 32}`, `f${i}.bin`), buf);
  }
  git(dir, "add", ".");
  git(dir, "-c", "user.name=B", "-c", "user.email=b@example.com", "commit", "-q", "-m", "bulk");
}
