import { expect, test } from "bun:test";
import { guestCwd } from "./workspace-cmds.ts";

test.each([
  ["the repo's top", "/home/u/repo", "/home/u/repo", undefined, "/root/repo"],
  ["a subdirectory", "/home/u/repo", "/home/u/repo/packages/web", undefined, "/root/repo/packages/web"],
  ["outside the repo (--from elsewhere)", "/home/u/repo", "/home/u", undefined, "/root/repo"],
  ["--cwd relative to the workspace", "/home/u/repo", "/home/u/repo/a", "b/c", "/root/repo/b/c"],
  ["--cwd absolute in the guest", "/home/u/repo", "/home/u/repo/a", "/tmp/x/", "/tmp/x/"],
  ["no workspace", null, "/home/u/repo/a", undefined, "/root/repo"],
] as const)("guestCwd: %s", (_n, top, cwd, opt, want) => {
  expect(guestCwd("/root/repo", top, cwd, opt)).toBe(want);
});
