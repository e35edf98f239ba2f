import { afterAll, beforeAll, describe, expect } from "bun:test";
import { appendFileSync, existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { gzipBombLayer, negativeSizeTar, writeOciLayout, writeRawLayout } from "../../src/testing/oci-fixtures.ts";
import { call } from "../../src/rpc/client.ts";
import { bangerBin, TestHome } from "../../src/testing/cli.ts";
import { hasBin, testNeeds } from "../../src/testing/skip.ts";

/**
 * Crafted images against the real daemon: a 1.5 KB tar with a negative size and a gzip bomb
 * are refused with errors naming the header or the cap, while the daemon keeps answering RPCs
 * (the import runs in a worker process, off the daemon's event loop).
 */
const built: Array<[boolean, string]> = [
  [existsSync(bangerBin), "dist/banger not built (bun run build)"],
  [hasBin("mkfs.ext4") && hasBin("debugfs") && hasBin("e2fsck"), "e2fsprogs (mkfs.ext4, debugfs, e2fsck) not installed"],
  [existsSync(join(bangerBin, "../banger-agent")), "dist/banger-agent not built (bun run build)"],
];

let home: TestHome;
beforeAll(() => {
  home = new TestHome();
  appendFileSync(home.paths.configFile, `import_max_size = "256M"\n`);
});
afterAll(async () => {
  await home?.cleanup();
});

/** Polls `vm.list` over the socket while `work` runs; returns the slowest answer in ms and how many answered. */
async function latencyDuring<T>(work: Promise<T>): Promise<{ result: T; slowestMs: number; answers: number }> {
  let done = false;
  let slowestMs = 0;
  let answers = 0;
  const poller = (async () => {
    while (!done) {
      const t = performance.now();
      await call(home.paths.socket, "vm.list", {});
      slowestMs = Math.max(slowestMs, performance.now() - t);
      answers++;
      await Bun.sleep(50);
    }
  })();
  const result = await work;
  done = true;
  await poller;
  return { result, slowestMs, answers };
}

function layout(name: string, blobs: Uint8Array[]): string {
  const dir = join(home.root, name);
  writeRawLayout(dir, blobs);
  return dir;
}

describe("image import of crafted images (real daemon)", () => {
  testNeeds(
    "a negative-size tar and a gzip bomb are refused while vm list keeps answering",
    built,
    async () => {
      expect((await home.run(["daemon", "status"])).code).toBe(0);

      const negative = layout("negative", [negativeSizeTar()]);
      const t0 = performance.now();
      const neg = await latencyDuring(home.run(["image", "import", negative, "--name", "neg"]));
      console.log(
        `negative-size tar refused in ${Math.round(performance.now() - t0)} ms; slowest vm.list ${Math.round(neg.slowestMs)} ms over ${neg.answers} answers`,
      );
      expect(neg.result.code).not.toBe(0);
      expect(neg.result.stderr).toContain('size field of the header at byte 0 is "-0001000"');

      // 4 GiB of zeros in about 4 MiB: the cap of 256 MiB stops it while it streams.
      const bomb = layout("bomb", [gzipBombLayer(4096)]);
      const t1 = performance.now();
      const b = await latencyDuring(home.run(["image", "import", bomb, "--name", "bomb"]));
      console.log(`gzip bomb refused in ${Math.round(performance.now() - t1)} ms; slowest vm.list ${Math.round(b.slowestMs)} ms over ${b.answers} answers`);
      expect(b.result.code).not.toBe(0);
      expect(b.result.stderr).toContain("unpacks to more than the import cap of 256 MiB");
      expect(b.result.stderr).toContain("import_max_size");
      expect(Math.max(neg.slowestMs, b.slowestMs)).toBeLessThan(1000);

      // Nothing is left: no image row, no image directory, no scratch directory.
      const list = await home.run(["image", "list", "--json"]);
      expect(JSON.parse(list.stdout)).toEqual([]);
      const images = join(home.paths.stateDir, "images");
      expect(existsSync(images) ? readdirSync(images) : []).toEqual([]);

      // A genuine image still imports through the worker, with its progress lines.
      const good = join(home.root, "good");
      writeOciLayout(good, [
        {
          layers: [
            [
              { path: "etc/", type: "dir" },
              { path: "etc/motd", data: "hello\n" },
            ],
          ],
        },
      ]);
      const ok = await home.run(["image", "import", good, "--name", "good"]);
      expect(ok.stderr + ok.stdout).toContain("layer 1/1");
      expect(ok.code).toBe(0);
      expect(JSON.parse((await home.run(["image", "list", "--json"])).stdout).map((i: { name: string }) => i.name)).toEqual(["good"]);
    },
    120_000,
  );
});
