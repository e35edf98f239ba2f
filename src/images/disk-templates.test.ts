import { afterAll, describe, expect } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostRunner, type Runner } from "../host/runner.ts";
import { hasBin, testNeeds } from "../testing/skip.ts";
import { DiskTemplates } from "./disk-templates.ts";
import { allocatedBytes, makeWorkSeed } from "./disks.ts";

const GiB = 1024 ** 3;
const dir = mkdtempSync(join(tmpdir(), "banger-templates-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const needs: Array<[boolean, string]> = [[hasBin("mkfs.ext4") && hasBin("resize2fs") && hasBin("debugfs"), "e2fsprogs not installed"]];

/** The real runner, remembering which tools ran. */
function countingRunner(): Runner & { tools: string[] } {
  const tools: string[] = [];
  return { tools, run: (argv, opts) => (tools.push(argv[0]!), hostRunner.run(argv, opts)) };
}

async function fsckClean(path: string): Promise<boolean> {
  return (await hostRunner.run(["e2fsck", "-f", "-n", path], { allowFailure: true })).code === 0;
}

describe("disk templates", () => {
  testNeeds("overlays: mkfs once, then each disk is a sparse clone; concurrent callers share one build", needs, async () => {
    const runner = countingRunner();
    const t = new DiskTemplates(join(dir, "t1"), { runner });
    const paths = [1, 2, 3].map((i) => join(dir, `ov${i}.ext4`));
    await Promise.all(paths.slice(0, 2).map((p) => t.overlay(p, 8 * GiB)));
    await t.overlay(paths[2]!, 8 * GiB);
    expect(runner.tools.filter((x) => x === "mkfs.ext4")).toHaveLength(1);
    expect(runner.tools.filter((x) => x === "cp")).toHaveLength(3);
    for (const p of paths) {
      expect(statSync(p).size).toBe(8 * GiB);
      expect(await allocatedBytes(p)).toBeLessThan(64 * 1024 * 1024);
      expect(await fsckClean(p)).toBe(true);
    }
    await expect(t.overlay(paths[0]!, 8 * GiB)).rejects.toMatchObject({ code: "already_exists" });
    expect(readdirSync(join(dir, "t1")).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  testNeeds("work disks: one grown template per seed and size; a rebuilt seed replaces its old templates", needs, async () => {
    const src = join(dir, "seed-src");
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, ".bashrc"), "echo hi\n");
    const seed = join(dir, "work.seed");
    await makeWorkSeed({ srcDir: src, path: seed }, { runner: hostRunner });
    const runner = countingRunner();
    const tdir = join(dir, "t2");
    const t = new DiskTemplates(tdir, { runner });
    await t.workDisk({ seed, path: join(dir, "w1.ext4"), sizeBytes: GiB });
    await t.workDisk({ seed, path: join(dir, "w2.ext4"), sizeBytes: GiB });
    expect(runner.tools.filter((x) => x === "resize2fs")).toHaveLength(1);
    const w2 = join(dir, "w2.ext4");
    expect(statSync(w2).size).toBe(GiB);
    expect((await hostRunner.run(["debugfs", "-R", "cat /.bashrc", w2])).stdout).toBe("echo hi\n");
    expect((await hostRunner.run(["debugfs", "-R", "ls -l", w2])).stdout).not.toContain("lost+found");
    expect(await fsckClean(w2)).toBe(true);
    // A rebuilt seed (new mtime) gets a new template, and the old one goes.
    const before = readdirSync(tdir);
    utimesSync(seed, new Date(), new Date(Date.now() + 5000));
    await t.workDisk({ seed, path: join(dir, "w3.ext4"), sizeBytes: GiB });
    const after = readdirSync(tdir);
    expect(after).toHaveLength(1);
    expect(after).not.toEqual(before);
    await expect(t.workDisk({ seed: join(dir, "none"), path: join(dir, "w4.ext4"), sizeBytes: GiB })).rejects.toMatchObject({ code: "not_found" });
    await expect(t.workDisk({ seed, path: join(dir, "w5.ext4"), sizeBytes: 1 })).rejects.toMatchObject({ code: "invalid_argument" });
    expect(existsSync(join(dir, "w5.ext4"))).toBe(false);
  });
});
