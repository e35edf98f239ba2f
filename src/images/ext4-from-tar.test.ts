import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostRunner } from "../host/runner.ts";
import { hasBin, testNeeds } from "../testing/skip.ts";
import { debugfsScript, ext4FromTar } from "./ext4-from-tar.ts";
import { FlatTree } from "./oci/tree.ts";
import { writeTar } from "./tar.ts";

const dir = mkdtempSync(join(tmpdir(), "banger-ext4-tar-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const meta = { mode: 0o644, uid: 0, gid: 0, mtime: 1 };

test("debugfs script: absolute quoted paths, hard links counted, fifos made inside their directory", () => {
  const tree = new FlatTree();
  tree.putLeaf('-b/q"x', { kind: "file", meta: { ...meta, mode: 0o4755, uid: 1000 }, blob: "/blobs/0", size: 3 });
  tree.link("-b/hl", '-b/q"x');
  tree.putLeaf("run/p", { kind: "fifo", meta });
  const { lines, stats } = debugfsScript(tree);
  // Children are written in name order, so "hl" carries the inode and 'q"x' links to it.
  expect(lines).toContain('write "/blobs/0" "/-b/hl"');
  expect(lines).toContain('sif "/-b/hl" mode 0104755');
  expect(lines).toContain('sif "/-b/hl" uid 1000');
  expect(lines).toContain('ln "/-b/hl" "/-b/q""x"');
  expect(lines.at(-1)).toBe('sif "/-b/hl" links_count 2');
  expect(lines.join("\n")).toContain('cd "/run"\nmknod "p" p\ncd "/"');
  expect(stats.inodes).toBe(5);
});

testNeeds("makes an ext4 from a gzipped rootfs tarball", [[hasBin("mkfs.ext4") && hasBin("debugfs"), "e2fsprogs not installed"]], async () => {
  const tar = join(dir, "rootfs.tar.gz");
  writeFileSync(tar, Bun.gzipSync(writeTar([{ path: "./etc/hostname", data: "box\n", uid: 1000 }]) as Uint8Array<ArrayBuffer>));
  const out = join(dir, "rootfs.ext4");
  const r = await ext4FromTar({ tarPath: tar, outPath: out, workDir: dir, runner: hostRunner });
  expect(r.sizeBytes).toBe(65 * 1024 * 1024);
  const stat = Bun.spawnSync(["debugfs", "-R", "stat /etc/hostname", out], { stderr: "pipe" }).stdout.toString();
  expect(stat).toMatch(/User:\s+1000/);
});
