import { afterAll, expect } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../../errors.ts";
import { hostRunner } from "../../host/runner.ts";
import { hasBin, testNeeds } from "../../testing/skip.ts";
import { writeTar, type TarInput } from "../tar.ts";
import { dockerSaveTar, writeOciLayout } from "../../testing/oci-fixtures.ts";
import { importOci } from "./import.ts";

const tools: Array<[boolean, string]> = [
  [hasBin("mkfs.ext4") && hasBin("debugfs") && hasBin("e2fsck"), "e2fsprogs (mkfs.ext4, debugfs, e2fsck) not installed"],
];
const base = mkdtempSync(join(tmpdir(), "banger-oci-unsafe-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

/** Every file below a directory, so a test can see that nothing new appeared anywhere. */
function listing(dir: string): string[] {
  return readdirSync(dir, { recursive: true }).map(String).sort();
}

const fine: TarInput[] = [{ path: "etc/ok", data: "ok" }];
const cases: Array<{ name: string; layer: TarInput[]; entry: string; says: string }> = [
  { name: "a ../ path", layer: [...fine, { path: "../escape", data: "x" }], entry: '"../escape"', says: '".."' },
  { name: "a nested ../ path", layer: [{ path: "etc/../../escape", data: "x" }], entry: '"etc/../../escape"', says: '".."' },
  { name: "an absolute path", layer: [{ path: "/etc/abs", data: "x" }], entry: '"/etc/abs"', says: "absolute" },
  {
    name: "a file written through a symlink that leaves the root",
    layer: [
      { path: "evil", type: "symlink", linkname: "../../../../tmp" },
      { path: "evil/pwned", data: "x" },
    ],
    entry: '"evil/pwned"',
    says: "outside the image root",
  },
  {
    name: "a hard link to outside",
    layer: [{ path: "hl", type: "hardlink", linkname: "../../etc/shadow" }],
    entry: '"hl"',
    says: '".."',
  },
  {
    name: "a hard link to a missing file",
    layer: [{ path: "hl", type: "hardlink", linkname: "nope/missing" }],
    entry: '"hl"',
    says: "does not exist",
  },
  { name: "a char device node", layer: [{ path: "dev/null", type: "char" }], entry: '"dev/null"', says: "device node" },
  { name: "a block device node", layer: [{ path: "dev/sda", type: "block" }], entry: '"dev/sda"', says: "device node" },
  { name: "a name with a newline", layer: [{ path: "etc/bad\nname", data: "x" }], entry: '"etc/bad\\nname"', says: "control character" },
  { name: "a name with a carriage return", layer: [{ path: "etc/bad\rname", data: "x" }], entry: '"etc/bad\\rname"', says: "control character" },
  { name: "a symlink target with a newline", layer: [{ path: "s", type: "symlink", linkname: "a\nb" }], entry: '"s"', says: "control character" },
  { name: "a whiteout with no name", layer: [{ path: "etc/.wh.", data: "" }], entry: '"etc/.wh."', says: "names no file" },
];

for (const c of cases) {
  testNeeds(`rejects ${c.name}, naming the entry and layer, writing nothing`, tools, async () => {
    const d = join(base, c.name.replace(/\W+/g, "-"));
    mkdirSync(join(d, "work"), { recursive: true });
    writeOciLayout(join(d, "layout"), [{ layers: [fine, c.layer] }]);
    const before = listing(base);
    const err = await importOci({ source: join(d, "layout"), outPath: join(d, "rootfs.ext4"), workDir: join(d, "work"), runner: hostRunner }).catch((e) => e);
    expect(err).toBeInstanceOf(BangerError);
    expect(err.code).toBe("invalid_argument");
    expect(err.message).toContain(c.entry);
    expect(err.message).toContain(c.says);
    expect(err.message).toContain("layer 2/2");
    expect(existsSync(join(d, "rootfs.ext4"))).toBe(false);
    expect(listing(base)).toEqual(before);
    expect(existsSync("/tmp/pwned") || existsSync(join(base, "escape"))).toBe(false);
  });
}

testNeeds("rejects a docker-save manifest whose layer path leaves the archive", tools, async () => {
  const d = join(base, "docker-manifest");
  mkdirSync(join(d, "work"), { recursive: true });
  const manifest = [{ Config: "c.json", RepoTags: ["x:1"], Layers: ["../../etc/passwd"] }];
  writeFileSync(
    join(d, "save.tar"),
    writeTar([
      { path: "c.json", data: JSON.stringify({ os: "linux", architecture: "amd64" }) },
      { path: "manifest.json", data: JSON.stringify(manifest) },
    ]),
  );
  const err = await importOci({ source: join(d, "save.tar"), outPath: join(d, "r.ext4"), workDir: join(d, "work"), runner: hostRunner }).catch((e) => e);
  expect(err).toBeInstanceOf(BangerError);
  expect(err.message).toContain('"../../etc/passwd"');
  expect(existsSync(join(d, "r.ext4"))).toBe(false);
});

testNeeds("rejects a device node in a docker-save tarball too, and a non-amd64 image", tools, async () => {
  const d = join(base, "docker-dev");
  mkdirSync(join(d, "work"), { recursive: true });
  writeFileSync(join(d, "save.tar"), dockerSaveTar([{ layers: [[{ path: "dev/kmsg", type: "char" }]], ref: "dev:1" }]));
  writeFileSync(join(d, "arm.tar"), dockerSaveTar([{ layers: [fine], ref: "arm:1", config: { architecture: "arm64" } }]));
  const common = { workDir: join(d, "work"), runner: hostRunner, outPath: join(d, "r.ext4") };
  const err = await importOci({ ...common, source: join(d, "save.tar") }).catch((e) => e);
  expect(err.message).toContain('"dev/kmsg"');
  const arm = await importOci({ ...common, source: join(d, "arm.tar") }).catch((e) => e);
  expect(arm.code).toBe("failed_precondition");
  expect(arm.message).toContain("linux/arm64");
  expect(readdirSync(d).sort()).toEqual(["arm.tar", "save.tar", "work"]);
});

testNeeds("follows an absolute symlink parent inside the image, as the guest would", tools, async () => {
  const d = join(base, "abs-symlink");
  mkdirSync(join(d, "work"), { recursive: true });
  writeOciLayout(join(d, "layout"), [
    {
      layers: [
        [
          { path: "etc/", type: "dir" },
          { path: "cfg", type: "symlink", linkname: "/etc" },
        ],
        [{ path: "cfg/app.conf", data: "v=1" }],
      ],
    },
  ]);
  const r = await importOci({ source: join(d, "layout"), outPath: join(d, "r.ext4"), workDir: join(d, "work"), runner: hostRunner });
  const out = Bun.spawnSync(["debugfs", "-R", "cat /etc/app.conf", r.rootfs], { stderr: "pipe" }).stdout.toString();
  expect(out).toBe("v=1");
});
