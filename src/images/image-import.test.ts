import { afterAll, expect } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostRunner } from "../host/runner.ts";
import { writeOciLayout } from "../testing/oci-fixtures.ts";
import { NO_LIMITS } from "./oci/unpack.ts";
import { hasBin, projectRoot, testNeeds } from "../testing/skip.ts";
import { importImage } from "./image-import.ts";

const tools: Array<[boolean, string]> = [[hasBin("mkfs.ext4") && hasBin("debugfs"), "e2fsprogs (mkfs.ext4, debugfs) not installed"]];
const base = mkdtempSync(join(tmpdir(), "banger-image-import-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

testNeeds("an image import is the first thing done on a fresh state directory: it makes the images directory itself", tools, async () => {
  const layout = join(base, "layout");
  writeOciLayout(layout, [
    {
      layers: [
        [
          { path: "etc/", type: "dir" },
          { path: "etc/os-release", data: "ID=test\n" },
        ],
      ],
    },
  ]);
  const agent = join(base, "agent");
  writeFileSync(agent, "#!/bin/sh\necho agent-1\n");
  chmodSync(agent, 0o755);
  // the state directory itself does not exist yet, as on a machine where banger never ran
  const imagesDir = join(base, "state", "banger", "images");
  const row = await importImage({
    source: layout,
    name: "first",
    kernel: null,
    imagesDir,
    agentBinary: agent,
    runner: hostRunner,
    progress: () => {},
    limits: NO_LIMITS,
    workerArgv: [process.execPath, join(projectRoot, "src/main.ts")],
  });
  expect(row.name).toBe("first");
  expect(existsSync(row.rootfs_path)).toBe(true);
  expect(readdirSync(imagesDir)).toEqual(["first"]);
});

testNeeds("image import --kernel-from: the built image's modules land at /lib/modules/<release> in the imported rootfs", tools, async () => {
  // a stand-in for a built image: merged-/usr, the modules under /usr/lib/modules
  const tree = join(base, "built-tree");
  mkdirSync(join(tree, "usr/lib/modules/6.1.0-99-test/kernel/net"), { recursive: true });
  writeFileSync(join(tree, "usr/lib/modules/6.1.0-99-test/modules.dep"), "kernel/net/wg.ko:\n");
  writeFileSync(join(tree, "usr/lib/modules/6.1.0-99-test/kernel/net/wg.ko"), "module bytes");
  symlinkSync("usr/lib", join(tree, "lib"));
  const rootfs = join(base, "built.ext4");
  await hostRunner.run(["mkfs.ext4", "-q", "-F", "-d", tree, rootfs, "16M"]);
  const layout = join(base, "layout-mods");
  writeOciLayout(layout, [
    {
      layers: [
        [
          { path: "etc/", type: "dir" },
          { path: "etc/os-release", data: "ID=test\n" },
        ],
      ],
    },
  ]);
  const agent = join(base, "agent");
  writeFileSync(agent, "#!/bin/sh\necho agent-1\n");
  chmodSync(agent, 0o755);
  const imagesDir = join(base, "state-mods", "images");
  const row = await importImage({
    source: layout,
    name: "app",
    kernel: "deb-kernel",
    modulesFrom: { rootfs, release: "6.1.0-99-test" },
    imagesDir,
    agentBinary: agent,
    runner: hostRunner,
    progress: () => {},
    limits: NO_LIMITS,
    workerArgv: [process.execPath, join(projectRoot, "src/main.ts")],
  });
  expect(row.kernel).toBe("deb-kernel");
  const cat = (p: string) => Bun.spawnSync(["debugfs", "-R", `cat ${p}`, row.rootfs_path], { stderr: "pipe" }).stdout.toString();
  expect(cat("/lib/modules/6.1.0-99-test/modules.dep")).toBe("kernel/net/wg.ko:\n");
  expect(cat("/lib/modules/6.1.0-99-test/kernel/net/wg.ko")).toBe("module bytes");
  const missing = await importImage({
    source: layout,
    name: "bad",
    kernel: null,
    modulesFrom: { rootfs, release: "6.1.0-0-none" },
    imagesDir,
    agentBinary: agent,
    runner: hostRunner,
    progress: () => {},
    limits: NO_LIMITS,
    workerArgv: [process.execPath, join(projectRoot, "src/main.ts")],
  }).catch((e) => e);
  expect(missing.message).toContain("has no modules for kernel 6.1.0-0-none");
  expect(readdirSync(imagesDir)).toEqual(["app"]);
});
