import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULTS } from "../config.ts";
import { resolvePaths } from "../host/paths.ts";
import { hostRunner, type Runner } from "../host/runner.ts";
import type { CallContext } from "../rpc/handle.ts";
import { openStore } from "../store/db.ts";
import { rejection } from "../testing/errors.ts";
import type { VmService } from "../vm/service.ts";
import { artifactHandlers } from "./artifact-handlers.ts";

const root = mkdtempSync(join(tmpdir(), "banger-artifacts-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

test("a kernel build whose caller goes away stops its compile, registers nothing and leaves no build dir", async () => {
  const paths = resolvePaths({ HOME: root, XDG_RUNTIME_DIR: join(root, "run") });
  mkdirSync(paths.stateDir, { recursive: true });
  const usrSrc = join(root, "src");
  mkdirSync(usrSrc);
  writeFileSync(join(usrSrc, "linux-source-6.1.tar.xz"), "");
  const marker = `banger-compile-${process.pid}`;
  // Extract and configure pretend to succeed; the compile is a real process that only a cancel ends.
  const runner: Runner = {
    run: (argv, opts) => {
      if (argv[0] === "make" && argv.includes("vmlinux")) return hostRunner.run(["sh", "-c", `sleep 60; : ${marker}`], opts);
      if (argv[0] === "tar") mkdirSync(join(argv[2]!, "linux-source-6.1"), { recursive: true });
      return Promise.resolve({ code: 0, stdout: "", stderr: "" });
    },
  };
  const db = openStore(paths.dbFile);
  const handlers = artifactHandlers({ paths, config: DEFAULTS, db, log: () => {}, runner, vms: {} as VmService });
  const abort = new AbortController();
  const stages: string[] = [];
  const ctx: CallContext = {
    signal: abort.signal,
    progress: (e) => {
      if (e.status === "start") stages.push(e.stage);
      if (e.stage === "compile") setTimeout(() => abort.abort(), 200);
    },
  };
  const e = await rejection(handlers["kernel.build"]!({ name: "k", source: usrSrc }, ctx));
  expect(e.code).toBe("cancelled");
  expect(stages).toEqual(["extract", "configure", "compile"]);
  expect(await handlers["kernel.list"]!({}, ctx)).toEqual([]);
  expect(readdirSync(paths.kernelsDir)).toEqual([]);
  expect(Bun.spawnSync(["pgrep", "-f", marker]).exitCode).toBe(1);
  db.close();
});
