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
  "src/modes/client.ts": 'import { x } from "../vm/model.ts";\nexport const y = x;\nexport const d = () => import("./daemon.ts");\n',
  "src/modes/daemon.ts": 'import { Client } from "ssh2";\nimport { x } from "../vm/model.ts";\nexport { Client, x };\n',
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
  const problems = checkImports(tree({ ...clean, "src/modes/client.ts": 'import { x } from "./daemon.ts";\nexport const y = x;\n' }));
  expect(problems.some((p) => p.includes("src/modes/client.ts loads src/modes/daemon.ts at start-up"))).toBe(true);
  expect(problems.some((p) => p.includes("loads ssh2"))).toBe(true);
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
