import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipBombLayer, writeOciLayout, writeRawLayout } from "../testing/oci-fixtures.ts";
import { NO_LIMITS } from "./oci/unpack.ts";
import { hasBin, projectRoot, testNeeds } from "../testing/skip.ts";
import { importInWorker, type ImportJob } from "./import-worker.ts";

const base = mkdtempSync(join(tmpdir(), "banger-import-worker-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));
const argv = [process.execPath, join(projectRoot, "src/main.ts")];
const agent = join(base, "agent");
writeFileSync(agent, "#!/bin/sh\necho agent-1\n", { mode: 0o755 });
let n = 0;

function job(layout: string, limits = NO_LIMITS): ImportJob {
  const dir = join(base, `job-${n++}`);
  mkdirSync(join(dir, "work"), { recursive: true });
  return { source: layout, outPath: join(dir, "rootfs.ext4"), workDir: join(dir, "work"), agentBinary: agent, agentVersion: "test", limits };
}

/** Total bytes of the files under dir. */
function bytesUnder(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) if (e.isFile()) total += statSync(join(e.parentPath, e.name)).size;
  return total;
}

const tools: Array<[boolean, string]> = [[hasBin("mkfs.ext4") && hasBin("debugfs") && hasBin("e2fsck"), "e2fsprogs not installed"]];

testNeeds("a worker imports an image, sending progress lines, and answers with the result", tools, async () => {
  const layout = join(base, "good");
  writeOciLayout(layout, [
    {
      layers: [
        [
          { path: "etc/", type: "dir" },
          { path: "etc/motd", data: "hi\n" },
        ],
      ],
    },
  ]);
  const lines: string[] = [];
  const j = job(layout);
  const r = await importInWorker(argv, j, (l) => lines.push(l));
  expect(r.rootfs).toBe(j.outPath);
  expect(r.layers).toBe(1);
  expect(lines.some((l) => l.startsWith("layer 1/1"))).toBe(true);
});

test("a worker's error comes back as the same BangerError code and message", async () => {
  const layout = join(base, "bomb-capped");
  writeRawLayout(layout, [gzipBombLayer(64)]);
  const err = await importInWorker(argv, job(layout, { maxBytes: 4 << 20, maxEntries: 100 }), () => {}).catch((e) => e);
  expect(err.code).toBe("invalid_argument");
  expect(err.message).toContain("unpacks to more than the import cap of 4 MiB");
  expect(err.hint).toContain("import_max_size");
});

test("aborting kills the worker at once: it is cancelled and writes nothing more", async () => {
  const layout = join(base, "bomb-slow");
  writeRawLayout(layout, [gzipBombLayer(8192)]);
  const j = job(layout);
  const ctl = new AbortController();
  const running = importInWorker(argv, j, () => {}, ctl.signal);
  await Bun.sleep(700);
  ctl.abort();
  const err = await running.catch((e) => e);
  expect(err.code).toBe("cancelled");
  const after = bytesUnder(j.workDir);
  await Bun.sleep(500);
  expect(bytesUnder(j.workDir)).toBe(after);
}, 30_000);
