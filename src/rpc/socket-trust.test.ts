import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { call, DaemonUnreachable } from "./client.ts";
import { rejection } from "../testing/errors.ts";
import { testNeeds } from "../testing/skip.ts";
import { resolvePaths } from "../host/paths.ts";
import { assertSocketPathFits, assertTrustedSocket, prepareTrustedDir, runtimeDirProblem } from "./socket-trust.ts";

const root = mkdtempSync(join(tmpdir(), "banger-rtdir-"));
const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
  rmSync(root, { recursive: true, force: true });
});
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;

/** A Unix socket listener that counts connections (a planted fake daemon). */
async function recorder(path: string): Promise<{ connections: () => number }> {
  let n = 0;
  const s = createServer((c) => {
    n++;
    c.destroy();
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(path, () => r()));
  return { connections: () => n };
}

describe("where the runtime dir is", () => {
  test("XDG_RUNTIME_DIR/banger when set; otherwise under the user's state dir, never a shared /tmp name", () => {
    expect(resolvePaths({ HOME: "/home/ada", XDG_RUNTIME_DIR: "/run/user/1000" }).runtimeDir).toBe("/run/user/1000/banger");
    const p = resolvePaths({ HOME: "/home/ada" });
    expect(p.runtimeDir).toBe("/home/ada/.local/state/banger/run");
    expect(p.socket.startsWith("/tmp")).toBe(false);
  });

  test("a socket path too long for a Unix socket is refused with the fix", () => {
    const long = `/${"x".repeat(120)}/banger.sock`;
    expect(() => assertSocketPathFits(long)).toThrow(/longer than the 107 bytes/);
    const e = (() => {
      try {
        assertSocketPathFits(long);
      } catch (err) {
        return err as { hint?: string };
      }
    })();
    expect(e?.hint).toContain("XDG_RUNTIME_DIR");
    expect(() => assertSocketPathFits("/run/user/1000/banger/banger.sock")).not.toThrow();
  });
});

describe("runtime dir rules (lstat, before any connection)", () => {
  const st = (o: Partial<{ dir: boolean; link: boolean; uid: number; mode: number }>) =>
    ({ isSymbolicLink: () => o.link ?? false, isDirectory: () => o.dir ?? true, uid: o.uid ?? 1000, mode: 0o40000 | (o.mode ?? 0o700) }) as never;
  test("own 0700 dir passes; a symlink, another owner, a group/world mode, a file are refused", () => {
    const me = { uid: 1000 };
    expect(runtimeDirProblem(st({}), me)).toBeNull();
    expect(runtimeDirProblem(st({ link: true }), me)).toBe("is a symbolic link");
    expect(runtimeDirProblem(st({ uid: 1001 }), me)).toContain("owned by uid 1001, not by you (uid 1000)");
    expect(runtimeDirProblem(st({ mode: 0o755 }), me)).toContain("mode 0755");
    expect(runtimeDirProblem(st({ dir: false }), me)).toBe("is not a directory");
  });

  test("prepare makes a 0700 dir, narrows an own wider one, and refuses a symlink to an own dir", () => {
    const dir = join(root, "a", "run");
    prepareTrustedDir(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    chmodSync(dir, 0o777);
    prepareTrustedDir(dir);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const link = join(root, "a", "link");
    symlinkSync(dir, link);
    expect(() => prepareTrustedDir(link)).toThrow(`banger's runtime directory ${link} is a symbolic link`);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
  });

  test("a symlinked runtime dir holding a live socket is refused and the socket sees no connection", async () => {
    const real = join(root, "real");
    mkdirSync(real, { mode: 0o700 });
    const fake = await recorder(join(real, "banger.sock"));
    const link = join(root, "linked");
    symlinkSync(real, link);
    const e = await rejection(call(join(link, "banger.sock"), "daemon.status"));
    expect(e.code).toBe("permission_denied");
    expect(e.message).toContain(`${link} is a symbolic link`);
    expect(e.hint).toContain("XDG_RUNTIME_DIR");
    expect(fake.connections()).toBe(0);
  });

  test("a missing runtime dir means no daemon (unreachable), not an error", async () => {
    expect(await call(join(root, "nope", "banger.sock"), "daemon.status").catch((e) => e)).toBeInstanceOf(DaemonUnreachable);
  });

  testNeeds(
    "another user's runtime dir, or another user's socket in ours, is refused and never connected to (root: chown to nobody)",
    [[isRoot, "needs root to chown to nobody"]],
    async () => {
      const theirs = join(root, "theirs");
      mkdirSync(theirs, { mode: 0o700 });
      const fake = await recorder(join(theirs, "banger.sock"));
      chownSync(theirs, NOBODY, NOBODY);
      const e = await rejection(call(join(theirs, "banger.sock"), "daemon.status"));
      expect(e.code).toBe("permission_denied");
      expect(e.message).toContain(`${theirs} is owned by uid ${NOBODY}, not by you`);
      expect(e.hint).toContain(`rm -r ${theirs}`);
      expect(() => prepareTrustedDir(theirs)).toThrow(`${theirs} is owned by uid ${NOBODY}`);

      const mine = join(root, "mine");
      mkdirSync(mine, { mode: 0o700 });
      const planted = await recorder(join(mine, "banger.sock"));
      chownSync(join(mine, "banger.sock"), NOBODY, NOBODY);
      expect(() => assertTrustedSocket(join(mine, "banger.sock"))).toThrow(`banger.sock is owned by uid ${NOBODY}`);
      expect((await rejection(call(join(mine, "banger.sock"), "daemon.status"))).code).toBe("permission_denied");
      expect(fake.connections() + planted.connections()).toBe(0);
    },
  );
});
