import { afterAll, expect } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostRunner } from "../host/runner.ts";
import { writeOciLayout } from "../images/oci/fixtures.ts";
import { NO_LIMITS } from "../images/oci/unpack.ts";
import { hasBin, projectRoot, testNeeds } from "../testing/skip.ts";
import { importImage } from "./image-import.ts";

const tools: Array<[boolean, string]> = [[hasBin("mkfs.ext4") && hasBin("debugfs"), "e2fsprogs (mkfs.ext4, debugfs) not installed"]];
const base = mkdtempSync(join(tmpdir(), "banger-image-import-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));

testNeeds("an image import is the first thing done on a fresh state directory: it makes the images directory itself", tools, async () => {
  const layout = join(base, "layout");
  writeOciLayout(layout, [{ layers: [[{ path: "etc/", type: "dir" }, { path: "etc/os-release", data: "ID=test\n" }]] }]);
  const agent = join(base, "agent");
  writeFileSync(agent, "#!/bin/sh\necho agent-1\n");
  chmodSync(agent, 0o755);
  // the state directory itself does not exist yet, as on a machine where banger never ran
  const imagesDir = join(base, "state", "banger", "images");
  const row = await importImage({ source: layout, name: "first", kernel: null, imagesDir, agentBinary: agent, runner: hostRunner, progress: () => {}, limits: NO_LIMITS, workerArgv: [process.execPath, join(projectRoot, "src/main.ts")] });
  expect(row.name).toBe("first");
  expect(existsSync(row.rootfs_path)).toBe(true);
  expect(readdirSync(imagesDir)).toEqual(["first"]);
});
