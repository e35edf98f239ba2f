/** What a workspace operation needs from the guest: run one shell command with streamed I/O. */
export interface GuestIo {
  /** Bytes fed to the command's stdin, then EOF. */
  stdin?: AsyncIterable<Uint8Array> | Uint8Array;
  /** When given, stdout is streamed here and not collected into the result. */
  onStdout?: (chunk: Uint8Array) => void;
  /** When given, stderr is streamed here and not collected into the result. */
  onStderr?: (chunk: Uint8Array) => void;
}

export interface GuestResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The seam between workspace logic and a guest: one implementation over SSH, one local for tests. */
export interface GuestShell {
  exec(cmd: string, io?: GuestIo): Promise<GuestResult>;
}

/** Quotes one word for POSIX sh. */
export function shq(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * Sh that holds a lock for `guestDir` until the script ends, so workspace operations on one
 * directory run one at a time (where the guest has flock; minimal images may not).
 */
export function workspaceLock(guestDir: string): string {
  const id = new Bun.CryptoHasher("sha256").update(guestDir).digest("hex").slice(0, 12);
  return `if command -v flock >/dev/null 2>&1 && [ -d /run/lock ]; then exec 9>/run/lock/banger-workspace-${id}.lock; flock 9; fi`;
}

/** Turns any async iterable of bytes into a ReadableStream (Bun.spawn's stdin wants one). */
export function toReadable(src: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  if (src instanceof ReadableStream) return src;
  const it = src[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      const r = await it.next();
      if (r.done) ctl.close();
      else ctl.enqueue(r.value);
    },
    async cancel() {
      await it.return?.();
    },
  });
}

/** Drains a stream into a callback, or into a string when no callback is given. */
export async function drain(stream: ReadableStream<Uint8Array>, onChunk?: (c: Uint8Array) => void): Promise<string> {
  if (!onChunk) return new Response(stream).text();
  for await (const chunk of stream) onChunk(chunk);
  return "";
}

/** This process's environment without GIT_* variables: those of an enclosing process (a hook, a test runner inside a repo) must not leak into git run here. */
export function envWithoutGit(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("GIT_")) env[k] = v;
  return env;
}

/**
 * A GuestShell that runs `sh -c` on this machine with HOME and cwd set to `root`, which
 * stands for the guest's /root. Tests pass guest paths under `root` explicitly.
 */
export function localShell(root: string): GuestShell {
  const env = envWithoutGit();
  env.HOME = root;
  return {
    async exec(cmd, io = {}) {
      const stdin = io.stdin === undefined ? "ignore" : io.stdin instanceof Uint8Array ? new Blob([io.stdin]) : toReadable(io.stdin);
      const proc = Bun.spawn(["sh", "-c", cmd], { cwd: root, env, stdin, stdout: "pipe", stderr: "pipe" });
      const [stdout, stderr, code] = await Promise.all([drain(proc.stdout, io.onStdout), drain(proc.stderr, io.onStderr), proc.exited]);
      return { code, stdout, stderr };
    },
  };
}
