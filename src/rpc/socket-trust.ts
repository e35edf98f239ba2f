import { chmodSync, lstatSync, mkdirSync, type Stats } from "node:fs";
import { dirname } from "node:path";
import { BangerError } from "../errors.ts";

/** The longest path a Unix socket address holds on Linux (sun_path is 108 bytes with its NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

/** Who the caller is; a seam so tests can check the rules without a second user. */
export interface Owner {
  uid: number;
}

/** The current process's user. */
export function currentOwner(): Owner {
  return { uid: process.getuid?.() ?? 0 };
}

const FIX = "Set XDG_RUNTIME_DIR to a directory only you can write (such as /run/user/$(id -u)), or unset it so banger uses its state directory";

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

/**
 * Why the runtime directory cannot be trusted, or null when it is a real directory owned by
 * the user with no access for anyone else. Another user who could plant or own it could
 * answer as the daemon.
 */
export function runtimeDirProblem(st: Stats, owner: Owner): string | null {
  if (st.isSymbolicLink()) return "is a symbolic link";
  if (!st.isDirectory()) return "is not a directory";
  if (st.uid !== owner.uid) return `is owned by uid ${st.uid}, not by you (uid ${owner.uid})`;
  if ((st.mode & 0o077) !== 0) return `has mode ${(st.mode & 0o777).toString(8).padStart(4, "0")}, open to other users`;
  return null;
}

function refused(dir: string, why: string): BangerError {
  return new BangerError("permission_denied", `banger's runtime directory ${dir} ${why}; refusing to use it, so nothing connects to a daemon there`, {
    hint: `Someone else may have planted it. Remove it (as its owner or root: rm -r ${dir}), or: ${FIX}.`,
  });
}

/** Throws unless the runtime directory exists and passes runtimeDirProblem. */
export function assertTrustedDir(dir: string, owner: Owner = currentOwner()): void {
  const st = lstatOrNull(dir);
  if (!st) throw new BangerError("not_found", `banger's runtime directory ${dir} does not exist`);
  const why = runtimeDirProblem(st, owner);
  if (why) throw refused(dir, why);
}

/**
 * Throws unless the socket lives in a trusted directory and is itself a socket owned by the
 * user (not a symlink). A missing socket passes: then there is nothing to connect to.
 * Called before every connection to the daemon.
 */
export function assertTrustedSocket(socket: string, owner: Owner = currentOwner()): void {
  assertSocketPathFits(socket);
  assertTrustedDir(dirname(socket), owner);
  const st = lstatOrNull(socket);
  if (!st) return;
  const why = st.isSymbolicLink()
    ? "is a symbolic link"
    : !st.isSocket()
      ? "is not a socket"
      : st.uid !== owner.uid
        ? `is owned by uid ${st.uid}, not by you (uid ${owner.uid})`
        : null;
  if (why) throw refused(socket, why);
}

/** Throws a clear error when a socket path is too long for a Unix socket address. */
export function assertSocketPathFits(socket: string): void {
  const bytes = Buffer.byteLength(socket);
  if (bytes <= MAX_SOCKET_PATH_BYTES) return;
  throw new BangerError(
    "invalid_argument",
    `the daemon socket path ${socket} is ${bytes} bytes, longer than the ${MAX_SOCKET_PATH_BYTES} bytes a Unix socket path may have`,
    {
      hint: "Set XDG_RUNTIME_DIR to a short directory only you can write (such as /run/user/$(id -u)), or XDG_STATE_HOME to a shorter path.",
    },
  );
}

/**
 * Makes the runtime directory (parents as needed) and checks it: a directory of ours with a
 * wider mode is narrowed to 0700; one that is someone else's, or a symlink, is refused.
 */
export function prepareTrustedDir(dir: string, owner: Owner = currentOwner()): void {
  try {
    mkdirSync(dirname(dir), { recursive: true, mode: 0o700 });
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EACCES" || code === "EPERM")
      throw new BangerError("permission_denied", `cannot create banger's runtime directory ${dir}: permission denied`, { hint: `${FIX}.`, cause: err });
    if (code !== "EEXIST") throw err;
  }
  const st = lstatSync(dir);
  const why = runtimeDirProblem(st, owner);
  if (why && st.isDirectory() && st.uid === owner.uid) chmodSync(dir, 0o700);
  else if (why) throw refused(dir, why);
}

/**
 * The runtime dir, made 0700 and checked: refused (with the fix) when it is a symlink or
 * another user's, and when the socket path inside would be too long for a Unix socket.
 */
export function prepareRuntimeDir(paths: { socket: string; runtimeDir: string }) {
  assertSocketPathFits(paths.socket);
  prepareTrustedDir(paths.runtimeDir);
}
