import { afterEach, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { checkImports } from "./check-imports.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A tiny src/ tree: path → file text. */
function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), "banger-imports-"));
  dirs.push(root);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

const clean = {
  "src/main.ts": 'const client = () => import("./modes/client.ts");\nexport { client };\n',
  "src/modes/client.ts": 'export * from "../cli/commands.ts";\n',
  "src/cli/commands.ts": 'import { x } from "../vm/model.ts";\nexport const y = x;\nexport const d = () => import("../daemon/serve.ts");\n',
  "src/modes/daemon.ts": 'export { serve } from "../daemon/serve.ts";\n',
  "src/daemon/serve.ts": 'import { Client } from "ssh2";\nimport { x } from "../vm/model.ts";\nexport const serve = () => [Client, x];\n',
  "src/vm/model.ts": "export const x = 1;\n",
};

test("the project's own tree has no wrong-way import", () => {
  expect(checkImports(join(import.meta.dir, ".."))).toEqual([]);
});

test("a clean tree passes; dynamic imports do not count against start-up", () => {
  expect(checkImports(tree(clean))).toEqual([]);
});

test("a planted import from the domain up into src/modes/ is caught", () => {
  const problems = checkImports(tree({ ...clean, "src/vm/model.ts": 'import { d } from "../modes/client.ts";\nexport const x = d;\n' }));
  expect(problems.join("\n")).toContain("src/vm/model.ts imports src/modes/client.ts");
});

test("a static import of the daemon from the CLI is caught, naming the chain's end", () => {
  const problems = checkImports(tree({ ...clean, "src/cli/commands.ts": 'import { serve } from "../daemon/serve.ts";\nexport const y = serve;\n' }));
  expect(problems.some((p) => p.includes("src/modes/client.ts loads src/daemon/serve.ts at start-up"))).toBe(true);
  expect(problems.some((p) => p.includes("src/cli/commands.ts imports src/daemon/serve.ts"))).toBe(true);
  expect(problems.some((p) => p.includes("loads ssh2"))).toBe(true);
});

test("the lean vm list/show path loading the method schemas is caught", () => {
  const problems = checkImports(
    tree({
      ...clean,
      "src/cli/read-cmds.ts": 'import { METHODS } from "../rpc/contract.ts";\nexport const m = METHODS;\n',
      "src/rpc/contract.ts": 'import * as v from "valibot";\nexport const METHODS = { list: v.object({}) };\n',
    }),
  );
  expect(problems).toContain("src/cli/read-cmds.ts loads src/rpc/contract.ts at start-up: import it with a dynamic import() where the command needs it");
  expect(problems.some((p) => p.includes("src/cli/read-cmds.ts loads valibot"))).toBe(true);
});

test("production code importing a fake is caught", () => {
  const problems = checkImports(
    tree({
      ...clean,
      "src/testing/fake-env.ts": "export const f = 1;\n",
      "src/vm/model.ts": 'import { f } from "../testing/fake-env.ts";\nexport const x = f;\n',
    }),
  );
  expect(problems.join("\n")).toContain("production code never imports test code");
});

test("the daemon importing the CLI, and the domain importing either room, are caught", () => {
  const problems = checkImports(
    tree({
      ...clean,
      "src/cli/render.ts": "export const r = 1;\n",
      "src/daemon/serve.ts": 'import { r } from "../cli/render.ts";\nexport const serve = () => r;\n',
      "src/workspace/sync.ts": 'import { serve } from "../daemon/serve.ts";\nexport const s = serve;\n',
      "src/host/paths.ts": 'import { r } from "../cli/render.ts";\nexport const p = r;\n',
    }),
  );
  const text = problems.join("\n");
  expect(text).toContain("src/daemon/serve.ts imports src/cli/render.ts: the daemon never imports the CLI");
  expect(text).toContain("src/workspace/sync.ts imports src/daemon/serve.ts: the domain never imports");
  expect(text).toContain("src/host/paths.ts imports src/cli/render.ts: the domain never imports");
});

test("a fake or fixture left in a production folder is caught", () => {
  const problems = checkImports(tree({ ...clean, "src/host/fake-host.ts": "export const h = 1;\n" }));
  expect(problems.join("\n")).toContain("src/host/fake-host.ts looks like test code");
});

test("host/ reaching into the store or the VM domain is caught; the pure network policy is allowed", () => {
  const problems = checkImports(
    tree({
      ...clean,
      "src/store/db.ts": "export const db = 1;\n",
      "src/vm/net-policy.ts": "export const policy = 1;\n",
      "src/host/doctor.ts":
        'import { db } from "../store/db.ts";\nimport { x } from "../vm/model.ts";\nimport { policy } from "../vm/net-policy.ts";\nexport const d = [db, x, policy];\n',
    }),
  );
  const text = problems.join("\n");
  expect(text).toContain("src/host/doctor.ts imports src/store/db.ts: host/ and config.ts sit below the domain");
  expect(text).toContain("src/host/doctor.ts imports src/vm/model.ts");
  expect(text).not.toContain("imports src/vm/net-policy.ts");
});
