import { describe, expect, test } from "bun:test";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { CommandError } from "../host/runner.ts";
import { onFullDisk } from "./no-space.ts";

const vms = tmpdir();
const path = join(vms, "abc", "work.ext4");

describe("onFullDisk", () => {
  test("a tool's No space left becomes an error naming the file and where to free space", async () => {
    const tool = new CommandError(["cp", "seed", path], { code: 1, stdout: "", stderr: `cp: error writing '${path}': No space left on device` });
    const err = (await onFullDisk("work disk", path, vms, () => Promise.reject(tool)).catch((e) => e)) as BangerError;
    expect(err).toBeInstanceOf(BangerError);
    expect(err.code).toBe("failed_precondition");
    expect(err.message).toMatch(new RegExp(`^no space left on device while making the work disk ${path}; only [0-9.]+ MiB free there$`));
    expect(err.hint).toBe(`Free space on the filesystem holding ${vms} (see \`df -h ${vms}\`), then retry.`);
  });

  test("an ENOSPC errno is recognised; other errors pass through unchanged", async () => {
    const enospc = Object.assign(new Error("write failed"), { code: "ENOSPC" });
    expect((await onFullDisk("config drive", path, vms, () => Promise.reject(enospc)).catch((e) => e)).message).toContain("config drive");
    const other = new Error("mkfs.ext4 exited 1: bad option");
    expect(await onFullDisk("overlay disk", path, vms, () => Promise.reject(other)).catch((e) => e)).toBe(other);
    expect(await onFullDisk("overlay disk", path, vms, async () => 7)).toBe(7);
  });
});
