import { afterAll, describe, expect } from "bun:test";
import { chownSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isRoot, testNeeds } from "../../testing/skip.ts";
import { hostRunner } from "../runner.ts";
import { ensureRootCopy } from "./systemd.ts";

const root = mkdtempSync(join(tmpdir(), "banger-rootcopy-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const NOBODY = 65534;

describe("root-owned copies for the boot-time unit (real install, as root)", () => {
  testNeeds(
    "a user-owned file and a user-writable target dir end up root:root, 0755/0644, not writable by the user; a second run changes nothing",
    [[isRoot, "needs root"]],
    async () => {
      const src = join(root, "banger");
      writeFileSync(src, "#!/bin/sh\necho hi\n", { mode: 0o777 });
      chownSync(src, NOBODY, NOBODY);
      const dir = join(root, "lib", "banger");
      // A target dir the user made (and could write) beforehand is taken over and narrowed.
      mkdirSync(dir, { recursive: true, mode: 0o777 });
      chownSync(dir, NOBODY, NOBODY);
      const copy = { from: src, to: join(dir, "banger"), mode: "0755" as const, dirs: [dir] };
      const deps = { runner: hostRunner, sudo: false };
      expect(await ensureRootCopy(deps, copy)).toEqual([`installed root-owned ${copy.to} (from ${src})`]);
      for (const [path, mode] of [
        [copy.to, 0o755],
        [dir, 0o755],
      ] as const) {
        const st = statSync(path);
        expect({ uid: st.uid, gid: st.gid, mode: st.mode & 0o777 }).toEqual({ uid: 0, gid: 0, mode });
      }
      expect(await ensureRootCopy(deps, copy)).toEqual([]);
      // The user changes their own binary afterwards: the next setup installs the new one, the boot unit never runs theirs.
      writeFileSync(src, "#!/bin/sh\necho changed\n");
      expect((await ensureRootCopy(deps, copy)).length).toBe(1);
    },
  );
});
