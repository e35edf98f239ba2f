import type { Duplex } from "node:stream";
import { createConnection } from "node:net";
import { Client, type ClientChannel } from "ssh2";
import { BangerError } from "../errors.ts";

export interface SshConnectOptions {
  host: string;
  port?: number;
  user?: string;
  /** The private key (OpenSSH or PEM text). */
  privateKey: string | Buffer;
  /** "ssh-ed25519 AAAA… [comment]": accept only this host key. Absent: any host key is accepted. */
  knownHostKey?: string;
  /** An already connected stream to speak SSH over (e.g. a vsock or virtio-serial bridge). */
  sock?: Duplex;
  /** Bound on TCP connect plus handshake plus authentication. */
  timeoutMs?: number;
}

/** Opens an authenticated SSH connection; errors are BangerErrors that say which part failed. */
export function sshConnect(opts: SshConnectOptions): Promise<Client> {
  const where = `${opts.user ?? "root"}@${opts.host}:${opts.port ?? 22}`;
  const expected = opts.knownHostKey ? hostKeyBlob(opts.knownHostKey) : null;
  let keyMismatch = false;
  return new Promise((resolve, reject) => {
    const conn = new Client();
    conn.once("ready", () => resolve(conn));
    // `on`, not `once`: after a handshake timeout ssh2 emits a second error when the socket then
    // closes ("Connection lost before handshake"), and an error with no listener ends the daemon.
    conn.on("error", (err) => {
      conn.end();
      reject(connectError(err, where, keyMismatch));
    });
    try {
      conn.connect({
        host: opts.host,
        port: opts.port ?? 22,
        username: opts.user ?? "root",
        privateKey: opts.privateKey,
        sock: opts.sock,
        readyTimeout: opts.timeoutMs ?? 10_000,
        keepaliveInterval: 0,
        hostVerifier: (key: Buffer) => {
          keyMismatch = expected !== null && !expected.equals(key);
          return !keyMismatch;
        },
      });
    } catch (err) {
      // ssh2 throws synchronously for a key it cannot parse.
      reject(
        new BangerError("invalid_argument", `SSH to ${where}: ${(err as Error).message}`, {
          hint: "Check the ssh_key setting points at an unencrypted OpenSSH private key.",
          cause: err,
        }),
      );
    }
  });
}

/** The wire blob of an OpenSSH public key line, which is what ssh2 hands the host verifier. */
export function hostKeyBlob(line: string): Buffer {
  const b64 = line.trim().split(/\s+/)[1];
  const blob = b64 ? Buffer.from(b64, "base64") : Buffer.alloc(0);
  if (blob.length < 16) throw new BangerError("invalid_argument", `not an OpenSSH public key: ${line.slice(0, 40)}`);
  return blob;
}

function connectError(err: Error & { level?: string; code?: string }, where: string, keyMismatch: boolean): BangerError {
  if (keyMismatch) {
    return new BangerError("permission_denied", `the host key of ${where} is not the one banger recorded for it`, {
      hint: "Something else answers at that address; check the VM's address (banger vm show) before trusting it.",
      cause: err,
    });
  }
  if (err.level === "client-authentication") {
    return new BangerError("permission_denied", `${where} refused banger's SSH key`, {
      hint: "Check /root/.ssh/authorized_keys in the guest holds banger's public key.",
      cause: err,
    });
  }
  if (/timed out/i.test(err.message)) {
    return new BangerError("timeout", `SSH to ${where} did not complete its handshake in time`, {
      hint: "Check the guest booted: banger vm logs NAME.",
      cause: err,
    });
  }
  return new BangerError("unavailable", `SSH to ${where} failed: ${err.message}`, {
    hint: "Check the VM is running and its sshd is up: banger vm logs NAME.",
    cause: err,
  });
}

/** Output sinks for sshExec; a given sink receives the stream instead of the result collecting it. */
export interface SshExecIo {
  stdin?: AsyncIterable<Uint8Array> | Uint8Array;
  stdout?: (chunk: Uint8Array) => void;
  stderr?: (chunk: Uint8Array) => void;
}

/** Most output sshExec collects per stream when no sink is given; more is an error, not memory. */
export const MAX_COLLECTED_BYTES = 64 * 1024 * 1024;

/** Collects a stream up to MAX_COLLECTED_BYTES; throws a clear error past it. */
function collector(what: string) {
  const parts: Buffer[] = [];
  let size = 0;
  return {
    take(c: Buffer) {
      size += c.length;
      if (size > MAX_COLLECTED_BYTES) {
        throw new BangerError(
          "failed_precondition",
          `the guest command wrote more than ${MAX_COLLECTED_BYTES >> 20} MiB to ${what}, more than banger collects; it was stopped`,
          {
            hint: "Redirect the command's output to a file in the guest, or stream it (banger vm ssh).",
          },
        );
      }
      parts.push(c);
    },
    text: () => Buffer.concat(parts).toString(),
  };
}

/** A finished command: its exit code and whatever output was collected (not streamed to a sink). */
export interface SshExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs one command over the connection, streaming stdin in with backpressure; resolves with its
 * exit code. A sink that throws (or collected output past its cap) ends the command and rejects.
 */
export function sshExec(conn: Client, cmd: string, io: SshExecIo = {}): Promise<SshExecResult> {
  return new Promise((resolve, reject) => {
    conn.exec(cmd, (err, ch) => {
      if (err) return reject(new BangerError("unavailable", `could not start a command over SSH: ${err.message}`, { cause: err }));
      const out = collector("stdout");
      const errs = collector("stderr");
      let code = 255;
      let closed = false;
      let failed: unknown;
      const guard = (take: (c: Buffer) => void) => (c: Buffer) => {
        if (failed !== undefined) return;
        try {
          take(c);
        } catch (e) {
          failed = e;
          ch.close();
        }
      };
      ch.on(
        "data",
        guard((c) => (io.stdout ? io.stdout(c) : out.take(c))),
      );
      ch.stderr.on(
        "data",
        guard((c) => (io.stderr ? io.stderr(c) : errs.take(c))),
      );
      // A command killed by a signal has no exit status; 128+n would need the number, so report it as 255.
      ch.on("exit", (c: number | null) => (code = c ?? 255));
      ch.on("close", () => {
        closed = true;
        if (failed !== undefined) reject(failed);
        else resolve({ code, stdout: out.text(), stderr: errs.text() });
      });
      void feed(ch, io.stdin, () => closed);
    });
  });
}

async function feed(ch: ClientChannel, stdin: SshExecIo["stdin"], closed: () => boolean): Promise<void> {
  if (stdin === undefined) return void ch.end();
  if (stdin instanceof Uint8Array) return void ch.end(Buffer.from(stdin));
  try {
    for await (const chunk of stdin) {
      if (closed()) break;
      if (!ch.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))) {
        await new Promise<void>((r) => {
          const done = () => {
            ch.off("drain", done);
            ch.off("close", done);
            r();
          };
          ch.on("drain", done);
          ch.on("close", done);
        });
      }
    }
  } catch {
    // The producer failed (its own error reaches the caller that owns it); the remote sees a short stream.
  }
  if (!closed()) ch.end();
}

export interface WaitForSshOptions extends Omit<SshConnectOptions, "sock" | "timeoutMs"> {
  /** Overall bound. */
  timeoutMs: number;
  /** Pause between attempts. */
  intervalMs?: number;
}

export interface WaitForSshDeps {
  connect?: (opts: SshConnectOptions) => Promise<Client>;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/**
 * Readiness probe: retries a full SSH login (so "ready" means banger can log in, not just
 * that a port is open) until it succeeds or timeoutMs passes. Resolves with the attempts made.
 */
export async function waitForSsh(opts: WaitForSshOptions, deps: WaitForSshDeps = {}): Promise<number> {
  const connect = deps.connect ?? sshConnect;
  const now = deps.now ?? Date.now;
  const sleep = deps.sleep ?? ((ms: number) => Bun.sleep(ms));
  const deadline = now() + opts.timeoutMs;
  let last: unknown;
  for (let attempt = 1; ; attempt++) {
    const left = deadline - now();
    try {
      const conn = await connect({ ...opts, timeoutMs: Math.max(500, Math.min(left, 5_000)) });
      conn.end();
      return attempt;
    } catch (err) {
      // A wrong host key or a refused key will not fix itself by waiting.
      if (err instanceof BangerError && err.code === "permission_denied") throw err;
      last = err;
    }
    if (now() + (opts.intervalMs ?? 200) >= deadline) break;
    await sleep(opts.intervalMs ?? 200);
  }
  const why = last instanceof Error ? last.message : String(last);
  throw new BangerError("timeout", `SSH on ${opts.host}:${opts.port ?? 22} was not ready within ${Math.round(opts.timeoutMs / 1000)}s (last: ${why})`, {
    hint: "Check the guest's console log (banger vm logs NAME); sshd may have failed to start.",
    cause: last,
  });
}

/** Reads an SSH server's identification line ("SSH-2.0-…"); rejects on anything else or silence. */
export function readSshBanner(host: string, port = 22, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host, port });
    let got = "";
    const done = (err: Error | null, line = "") => {
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(line);
    };
    const timer = setTimeout(() => done(new Error(`no SSH banner from ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    s.on("data", (chunk: Buffer) => {
      got += chunk.toString("latin1");
      // RFC 4253 4.2: the server may send other lines first; its identification starts with SSH-.
      for (const line of got.split("\r\n").slice(0, -1)) if (line.startsWith("SSH-")) return done(null, line.slice(0, 255));
      if (got.length > 8192) done(new Error(`${host}:${port} sent no SSH identification`));
    });
    s.on("error", (err) => done(err));
    s.on("end", () => done(new Error(`${host}:${port} closed the connection before its SSH banner`)));
  });
}

/**
 * The readiness probe for a restored guest: its sshd was serving logins when the state was
 * saved and runs on after the restore, so its banner (a fresh per-connection process,
 * which reads the host key anew) is enough; a full login there costs seconds of cold
 * emulated CPU and proves nothing more. Retries until timeoutMs.
 */
export async function waitForSshBanner(
  host: string,
  timeoutMs: number,
  deps: { read?: typeof readSshBanner; sleep?: (ms: number) => Promise<void> } = {},
): Promise<void> {
  const read = deps.read ?? readSshBanner;
  const sleep = deps.sleep ?? ((ms: number) => Bun.sleep(ms));
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      await read(host, 22, Math.max(500, Math.min(deadline - Date.now(), 5_000)));
      return;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new BangerError(
    "timeout",
    `SSH on ${host}:22 did not answer within ${Math.round(timeoutMs / 1000)}s after the restore (last: ${last instanceof Error ? last.message : String(last)})`,
    {
      hint: "Check the guest's console log (banger vm logs NAME); sshd may have failed.",
    },
  );
}
