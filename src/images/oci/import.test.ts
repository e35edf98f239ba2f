import { afterAll, expect } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../../errors.ts";
import { hostRunner } from "../../host/runner.ts";
import { hasBin, testNeeds } from "../../testing/skip.ts";
import type { TarInput } from "../tar.ts";
import { dockerSaveTar, tarDirectory, writeOciLayout, type FixtureImage } from "../../testing/oci-fixtures.ts";
import { importOci } from "./import.ts";

const tools: Array<[boolean, string]> = [
  [hasBin("mkfs.ext4") && hasBin("debugfs") && hasBin("e2fsck"), "e2fsprogs (mkfs.ext4, debugfs, e2fsck) not installed"],
];
const base = mkdtempSync(join(tmpdir(), "banger-oci-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => {
  const d = join(base, `${name}-${n++}`);
  mkdirSync(join(d, "work"), { recursive: true });
  return d;
};

function debugfs(img: string, cmd: string): string {
  const r = Bun.spawnSync(["debugfs", "-R", cmd, img], { stderr: "pipe" });
  return r.stdout.toString();
}

/** Mode, owner and link count of one path in an ext4, read back with debugfs. */
function stat(img: string, path: string) {
  const out = debugfs(img, `stat "${path}"`);
  const num = (re: RegExp) => Number(re.exec(out)?.[1]);
  return {
    type: /Type: (\w+)/.exec(out)?.[1],
    mode: parseInt(/Mode:\s+(\d+)/.exec(out)?.[1] ?? "NaN", 8),
    uid: num(/User:\s+(\d+)/),
    gid: num(/Group:\s+(\d+)/),
    links: num(/Links: (\d+)/),
    symlink: /Fast link dest: "(.*)"/.exec(out)?.[1],
  };
}
const cat = (img: string, path: string) => debugfs(img, `cat "${path}"`);
const exists = (img: string, path: string) => /Inode: \d+/.test(debugfs(img, `stat "${path}"`));

const layer1: TarInput[] = [
  { path: "./", type: "dir", mode: 0o755 },
  { path: "etc/", type: "dir" },
  { path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/sh\n" },
  { path: "bin/su", data: "#!su", mode: 0o4755 },
  { path: "usr/bin/wall", data: "wall", mode: 0o2755, gid: 5 },
  {
    path: "usr/bin/ping",
    data: "ping",
    mode: 0o755,
    xattrs: { "security.capability": new Uint8Array([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0]), "system.posix_acl_access": new Uint8Array([2]) },
  },
  { path: "tmp/", type: "dir", mode: 0o1777 },
  { path: "home/dev/", type: "dir", mode: 0o750, uid: 1000, gid: 1000 },
  { path: "home/dev/notes.txt", data: "mine", mode: 0o600, uid: 1000, gid: 1000 },
  { path: "usr/lib/old.so", data: "old" },
  { path: "usr/lib/keep.so", data: "keep" },
  { path: "opt/app/stale", data: "stale" },
  { path: "opt/app/sub/deep", data: "deep" },
  { path: "lib", type: "symlink", linkname: "usr/lib" },
];
const layer2: TarInput[] = [
  { path: "usr/lib/.wh.old.so", data: "" },
  { path: "opt/app/fresh", data: "fresh" },
  { path: "opt/app/.wh..wh..opq", data: "" },
  { path: "bin/su-again", type: "hardlink", linkname: "bin/su" },
  { path: "run/ctl", type: "fifo", mode: 0o600 },
  { path: "etc/motd", type: "symlink", linkname: "/usr/share/motd" },
];
const layer3: TarInput[] = [
  { path: "lib/through-link.so", data: "via symlink" },
  { path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/bash\n" },
  { path: "very/".repeat(30) + "long-name.txt", data: "pax" },
];
const multiLayer: FixtureImage = { layers: [layer1, layer2, layer3], ref: "demo:1", compress: ["gzip", "zstd", "none"] };

function checkFlattened(img: string) {
  expect(cat(img, "/etc/passwd")).toBe("root:x:0:0:root:/root:/bin/bash\n");
  expect(stat(img, "/bin/su")).toMatchObject({ type: "regular", mode: 0o4755, uid: 0, links: 2 });
  expect(cat(img, "/bin/su-again")).toBe("#!su");
  expect(stat(img, "/usr/bin/wall")).toMatchObject({ mode: 0o2755, gid: 5 });
  expect(debugfs(img, "ea_list /usr/bin/ping")).toContain("security.capability (12) = 01 00 00 02 00 20 00 00 00 00 00 00");
  expect(debugfs(img, "ea_list /usr/bin/ping")).not.toContain("posix_acl");
  expect(stat(img, "/tmp")).toMatchObject({ type: "directory", mode: 0o1777 });
  expect(stat(img, "/home/dev")).toMatchObject({ mode: 0o750, uid: 1000, gid: 1000 });
  expect(stat(img, "/home/dev/notes.txt")).toMatchObject({ mode: 0o600, uid: 1000, gid: 1000 });
  expect(exists(img, "/usr/lib/old.so")).toBe(false);
  expect(cat(img, "/usr/lib/keep.so")).toBe("keep");
  expect(cat(img, "/usr/lib/through-link.so")).toBe("via symlink");
  expect(stat(img, "/lib")).toMatchObject({ type: "symlink", symlink: "usr/lib" });
  expect(stat(img, "/etc/motd")).toMatchObject({ type: "symlink", symlink: "/usr/share/motd" });
  expect(exists(img, "/opt/app/stale")).toBe(false);
  expect(exists(img, "/opt/app/sub")).toBe(false);
  expect(cat(img, "/opt/app/fresh")).toBe("fresh");
  expect(stat(img, "/run/ctl")).toMatchObject({ type: "FIFO", mode: 0o600 });
  expect(cat(img, "/" + "very/".repeat(30) + "long-name.txt")).toBe("pax");
}

testNeeds(
  "imports a multi-layer OCI layout: whiteouts, opaque dir, links, setuid, uid 1000, extras",
  tools,
  async () => {
    const d = fresh("layout");
    writeOciLayout(join(d, "layout"), [multiLayer]);
    const agent = join(d, "agent-bin");
    writeFileSync(agent, "#!agent");
    const lines: string[] = [];
    const r = await importOci({
      source: join(d, "layout"),
      outPath: join(d, "rootfs.ext4"),
      workDir: join(d, "work"),
      runner: hostRunner,
      onProgress: (l) => lines.push(l),
      extraEntries: [
        { path: "/usr/local/bin/banger-agent", fromFile: agent, mode: 0o755 },
        { path: "/etc/ssh/sshd_config.d/banger.conf", content: "PasswordAuthentication no\n", mode: 0o600 },
        { path: "/etc/systemd/system/multi-user.target.wants/banger-agent.service", type: "symlink", target: "/etc/systemd/system/banger-agent.service" },
      ],
    });
    expect(r).toMatchObject({ rootfs: join(d, "rootfs.ext4"), layers: 3 });
    expect(r.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(r.config.config?.Cmd).toEqual(["/bin/sh"]);
    checkFlattened(r.rootfs);
    expect(stat(r.rootfs, "/usr/local/bin/banger-agent")).toMatchObject({ mode: 0o755, uid: 0 });
    expect(cat(r.rootfs, "/usr/local/bin/banger-agent")).toBe("#!agent");
    expect(stat(r.rootfs, "/etc/ssh/sshd_config.d/banger.conf")).toMatchObject({ mode: 0o600 });
    expect(lines.length).toBe(5);
    expect(readdirSync(join(d, "work"))).toEqual([]);
  },
  60_000,
);

testNeeds(
  "imports a docker-save tarball, choosing the image by ref",
  tools,
  async () => {
    const d = fresh("docker");
    const other: FixtureImage = { layers: [[{ path: "other", data: "x" }]], ref: "other:latest" };
    writeFileSync(join(d, "save.tar"), dockerSaveTar([multiLayer, other]));
    const common = { source: join(d, "save.tar"), workDir: join(d, "work"), runner: hostRunner };
    const err = await importOci({ ...common, outPath: join(d, "a.ext4") }).catch((e) => e);
    expect(err).toBeInstanceOf(BangerError);
    expect(err.message).toContain("demo:1, other:latest");
    const r = await importOci({ ...common, ref: "demo:1", outPath: join(d, "b.ext4") });
    expect(r.layers).toBe(3);
    checkFlattened(r.rootfs);
    const o = await importOci({ ...common, ref: "other", outPath: join(d, "c.ext4") });
    expect(cat(o.rootfs, "/other")).toBe("x");
  },
  60_000,
);

testNeeds(
  "imports an oci-archive tarball",
  tools,
  async () => {
    const d = fresh("archive");
    writeOciLayout(join(d, "layout"), [multiLayer]);
    writeFileSync(join(d, "image.tar"), tarDirectory(join(d, "layout")));
    const r = await importOci({ source: join(d, "image.tar"), outPath: join(d, "rootfs.ext4"), workDir: join(d, "work"), runner: hostRunner });
    checkFlattened(r.rootfs);
  },
  60_000,
);

testNeeds(
  "benchmark: imports a ~50 MB layer",
  tools,
  async () => {
    const d = fresh("bench");
    const files: TarInput[] = [];
    for (let i = 0; i < 50; i++) files.push({ path: `data/blob-${i}`, data: new Uint8Array(randomBytes(1 << 20)) });
    for (let i = 0; i < 2000; i++) files.push({ path: `small/d${i % 40}/f${i}`, data: `file ${i}\n` });
    writeOciLayout(join(d, "layout"), [{ layers: [files] }]);
    const started = performance.now();
    const r = await importOci({ source: join(d, "layout"), outPath: join(d, "rootfs.ext4"), workDir: join(d, "work"), runner: hostRunner });
    const ms = Math.round(performance.now() - started);
    console.log(`import of a 50 MiB + 2000-file layer: ${ms} ms, image ${Math.round(r.sizeBytes / 1048576)} MiB`);
    expect(cat(r.rootfs, "/small/d3/f1003")).toBe("file 1003\n");
  },
  120_000,
);
