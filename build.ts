/** Compiles `banger` and the guest agent into dist/ as standalone executables. */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const root = import.meta.dir;
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };

/** A hash of the source files under dir: two builds of the same sources share a build id. */
function sourceHash(sub = "src", only?: (path: string) => boolean): string {
  const h = createHash("sha256");
  const walk = (dir: string) => {
    for (const e of readdirSync(dir).sort()) {
      const p = join(dir, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (!p.endsWith(".test.ts") && (only ? only(p) : true)) h.update(p.slice(root.length)).update(readFileSync(p));
    }
  };
  walk(join(root, sub));
  return h.digest("hex").slice(0, 12);
}

const buildId = process.env.BANGER_BUILD_ID ?? sourceHash();
const define = {
  BANGER_VERSION: JSON.stringify(pkg.version),
  BANGER_BUILD_ID: JSON.stringify(buildId),
  // The agent's version follows only its own sources, so rebuilding banger does not make
  // every guest's agent look outdated.
  BANGER_AGENT_VERSION: JSON.stringify(`${pkg.version}+${sourceHash("src", (p) => p.includes("/src/agent/") || p.endsWith("/src/guest-agent.ts"))}`),
};
const outdir = process.argv[2] ?? join(root, "dist");

for (const [entry, name] of [
  ["src/main.ts", "banger"],
  ["src/guest-agent.ts", "banger-agent"],
] as const) {
  if (!Bun.file(join(root, entry)).size) throw new Error(`missing ${entry}`);
  const started = performance.now();
  const result = await Bun.build({
    entrypoints: [join(root, entry)],
    compile: { outfile: join(outdir, name) },
    minify: true,
    // Precompiled bytecode starts both several times faster (it needs entries without top-level await).
    bytecode: true,
    // One chunk per lazily imported part: `banger version` loads the command table alone, not
    // the daemon, ssh2 and the drivers (a single chunk costs their load on every run).
    ...(name === "banger" ? { format: "esm", splitting: true } : {}),
    define,
  } as Parameters<typeof Bun.build>[0]);
  if (!result.success) {
    for (const log of result.logs) console.error(log);
    process.exit(1);
  }
  console.log(`built ${join(outdir, name)} (${buildId}) in ${Math.round(performance.now() - started)} ms`);
}
