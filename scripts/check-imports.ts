#!/usr/bin/env bun
/**
 * The import check: fails on an import that goes the wrong way between the rooms of src/
 * (see ARCHITECTURE.md). Run by scripts/test.sh; `bun scripts/check-imports.ts [root]`.
 * Only static imports count for the start-up rules: a dynamic import() is how the CLI
 * defers what a command may not need.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

export interface Edge {
  from: string;
  to: string;
  dynamic: boolean;
}

/** Test code: everything under src/testing/ (fakes, fixtures, contract suites) and the `*.test.ts` beside what they test. */
export function isTestCode(file: string): boolean {
  return file.startsWith("src/testing/") || file.endsWith(".test.ts");
}

/** A file outside src/testing/ named like a fake, a fixture or a contract suite: it belongs in src/testing/. */
function looksLikeTestCode(file: string): boolean {
  return (
    !isTestCode(file) && /(^|\/)fake-[^/]*\.ts$|fixtures?\.ts$|\.contract\.ts$|-contract[^/]*\.ts$|\/drivers\/contract[^/]*\.ts$|\/testrepo\.ts$/.test(file)
  );
}

/** What `version` and `--help` may load before running: no daemon, no drivers, no store, no ssh2. */
const CLI_FORBIDDEN = [
  /^src\/modes\/daemon\.ts$/,
  /^src\/daemon\//,
  /^src\/store\//,
  /^src\/vm\/drivers\/(?!process\.ts)/,
  /^src\/vm\/(service|create|start-stop|reconcile|steps)\.ts$/,
  /^ssh2$/,
  /^dns-packet$/,
  /^bun:sqlite$/,
];

/**
 * Entry points and what they may not load statically: the CLI's start-up, and the lean path of
 * `vm list` and `vm show`, which also leaves out the config, the method schemas and the command table.
 */
const START_UP: Array<{ entry: string; forbidden: RegExp[] }> = [
  { entry: "src/main.ts", forbidden: CLI_FORBIDDEN },
  { entry: "src/modes/client.ts", forbidden: CLI_FORBIDDEN },
  { entry: "src/cli/read-cmds.ts", forbidden: [...CLI_FORBIDDEN, /^valibot$/, /^src\/config\.ts$/, /^src\/rpc\/contract\.ts$/, /^src\/cli\/commands\.ts$/] },
];

/** The domain: what the CLI and the daemon are built on; it never reaches up into them. */
const DOMAIN = /^src\/(vm|images|workspace|host|store|agent|rpc)\/|^src\/(config|errors|printable|units|version|self|lazy|guest-agent)\.ts$/;

/**
 * Room rules: a file matching `from` may not import a file matching `to`. A rule marked
 * `staticOnly` lets a dynamic import() through (the CLI loading the daemon to run it).
 */
const RULES: Array<{ from: RegExp; to: RegExp; why: string; staticOnly?: boolean }> = [
  { from: /^src\/(?!modes\/|main\.ts)/, to: /^src\/modes\//, why: "only main.ts loads the two modes; nothing below them imports from src/modes/" },
  {
    from: /^src\/cli\//,
    to: /^src\/daemon\//,
    staticOnly: true,
    why: "the CLI loads the daemon only through a dynamic import() (`daemon run`); shared types live in rpc/ or the domain",
  },
  { from: /^src\/daemon\//, to: /^src\/cli\//, why: "the daemon never imports the CLI; what both need lives in rpc/, the domain or a shared leaf" },
  { from: DOMAIN, to: /^src\/(cli|daemon|modes)\//, why: "the domain never imports the CLI, the daemon or the modes; they import it" },
  {
    from: /^src\/(agent\/|guest-agent\.ts)/,
    to: /^src\/(host|store|vm|images|workspace|modes|cli|daemon|rpc)\//,
    why: "the guest agent is its own small program: it imports only src/agent/ and shared leaves",
  },
  {
    from: /^src\/(store|rpc)\//,
    to: /^src\/(vm|images|host|workspace|agent)\/(?!model\.ts)/,
    why: "store/ and rpc/ are leaves below the domain (rpc/ may name vm/model.ts types)",
  },
  {
    from: /^src\/(host\/|config\.ts$)/,
    to: /^src\/(vm\/(?!net-policy\.ts)|(store|images|workspace|agent|rpc\/(?!socket-trust\.ts))\/?)/,
    why:
      "host/ and config.ts sit below the domain: they take what they need (the store, a VMM fact) as a dependency; " +
      "vm/net-policy.ts is a pure leaf they may use",
  },
  { from: /^src\/store\//, to: /^src\/rpc\//, why: "store/ is a leaf: it does not know the wire" },
  { from: /^src\/rpc\//, to: /^src\/store\//, why: "rpc/ is a leaf: it does not know the database" },
];

function sourceFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir)) {
      const p = join(dir, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith(".ts")) out.push(relative(root, p));
    }
  };
  walk(join(root, "src"));
  return out.sort();
}

/** Every import of every file under root/src, relative imports resolved to root-relative paths. */
export function importEdges(root: string): Edge[] {
  const t = new Bun.Transpiler({ loader: "ts" });
  const edges: Edge[] = [];
  for (const file of sourceFiles(root)) {
    const text = readFileSync(join(root, file), "utf8").replace(/^#!.*/, "");
    for (const imp of t.scanImports(text)) {
      let to = imp.path;
      if (to.startsWith(".")) {
        to = relative(root, resolve(root, dirname(file), to));
        if (!to.endsWith(".ts") && existsSync(join(root, `${to}.ts`))) to = `${to}.ts`;
      }
      edges.push({ from: file, to, dynamic: imp.kind === "dynamic-import" });
    }
  }
  return edges;
}

/** Files reachable from entry through static imports only. */
export function staticClosure(edges: Edge[], entry: string): Set<string> {
  const seen = new Set<string>();
  const stack = [entry];
  while (stack.length) {
    const f = stack.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    for (const e of edges) if (e.from === f && !e.dynamic) stack.push(e.to);
  }
  return seen;
}

/** Every wrong-way import, as a line naming the file, the import and the rule. */
export function checkImports(root: string): string[] {
  const edges = importEdges(root);
  const problems: string[] = [];
  for (const e of edges) {
    if (isTestCode(e.from)) continue;
    if (isTestCode(e.to)) problems.push(`${e.from} imports ${e.to}: production code never imports test code (fakes, fixtures, contract suites)`);
    for (const r of RULES) {
      if (r.staticOnly && e.dynamic) continue;
      if (r.from.test(e.from) && r.to.test(e.to)) problems.push(`${e.from} imports ${e.to}: ${r.why}`);
    }
  }
  for (const f of sourceFiles(root))
    if (looksLikeTestCode(f)) problems.push(`${f} looks like test code (a fake, fixture or contract suite): move it to src/testing/`);
  for (const { entry, forbidden } of START_UP) {
    for (const f of staticClosure(edges, entry)) {
      if (forbidden.some((re) => re.test(f))) problems.push(`${entry} loads ${f} at start-up: import it with a dynamic import() where the command needs it`);
    }
  }
  return problems;
}

if (import.meta.main) {
  const root = resolve(process.argv[2] ?? join(import.meta.dir, ".."));
  const problems = checkImports(root);
  for (const p of problems) console.error(`import check: ${p}`);
  console.log(`import check: ${problems.length ? `${problems.length} wrong-way import(s)` : "ok"}`);
  process.exit(problems.length ? 1 : 0);
}
