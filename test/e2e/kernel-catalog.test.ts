import { afterAll, beforeAll, expect } from "bun:test";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { bangerBin, TestHome } from "../../src/testing/cli.ts";
import { fixtureKernel } from "../../src/testing/real-env.ts";
import { hasFile, testNeeds } from "../../src/testing/skip.ts";

const needs: Array<[boolean, string]> = [
  [existsSync(bangerBin), "dist/banger not built"],
  [hasFile(fixtureKernel), "needs the fixture kernel"],
];
let server: ReturnType<typeof Bun.serve> | null = null;
let sha = "";
const homes: TestHome[] = [];
beforeAll(async () => {
  sha = new Bun.CryptoHasher("sha256").update(await Bun.file(fixtureKernel).arrayBuffer()).digest("hex");
  server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch(req) {
      const url = new URL(req.url);
      const base = `http://127.0.0.1:${server!.port}`;
      if (url.pathname === "/catalog.json") {
        return Response.json([
          { name: "good", version: "6.1.192", url: `${base}/vmlinux.zst`, sha256: sha, size: Bun.file(fixtureKernel).size },
          { name: "tampered", version: "6.1.192", url: `${base}/vmlinux.zst`, sha256: "0".repeat(64), size: Bun.file(fixtureKernel).size },
        ]);
      }
      if (url.pathname === "/vmlinux.zst") return new Response(Bun.file(fixtureKernel));
      return new Response("no", { status: 404 });
    },
  });
});
afterAll(async () => {
  server?.stop(true);
  for (const h of homes) await h.cleanup();
});

function home(): TestHome {
  const h = new TestHome();
  homes.push(h);
  writeFileSync(h.paths.configFile, `dns_listen = "127.0.0.1:0"\nkernel_catalog = "http://127.0.0.1:${server!.port}/catalog.json"\n`);
  return h;
}

testNeeds("kernel import registers the fixture with its sha256", needs, async () => {
  const h = home();
  const r = await h.run(["kernel", "import", fixtureKernel, "--name", "fixture"]);
  expect(r.code).toBe(0);
  const k = JSON.parse((await h.run(["kernel", "show", "fixture", "--json"])).stdout);
  expect(k.sha256).toBe("dbed92b3c7338dd90fe14fa2d920ffe5ed2fc6d2df53d4ce365fe0c890b986a2");
  expect(k.version).toBe("6.1.192");
  const again = await h.run(["kernel", "import", fixtureKernel, "--name", "fixture"]);
  expect(again.code).toBe(1);
  expect(again.stderr).toContain("--force");
});

testNeeds("kernel pull from a catalog on a local HTTP server registers it; a wrong sha256 is refused with nothing registered", needs, async () => {
  const h = home();
  const good = await h.run(["kernel", "pull", "good"]);
  expect(good.code).toBe(0);
  const listed = JSON.parse((await h.run(["kernel", "list", "--json"])).stdout).map((k: { name: string }) => k.name);
  expect(listed).toEqual(["good"]);
  const bad = await h.run(["kernel", "pull", "tampered"]);
  expect(bad.code).toBe(1);
  expect(bad.stderr).toMatch(/sha256/i);
  expect(JSON.parse((await h.run(["kernel", "list", "--json"])).stdout).map((k: { name: string }) => k.name)).toEqual(["good"]);
  expect(readdirSync(h.paths.kernelsDir).filter((n) => !n.startsWith("."))).toEqual(["good"]);
  expect(readdirSync(h.paths.kernelsDir)).toEqual(["good"]);
});
