import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../../errors.ts";
import { hostRunner } from "../../host/runner.ts";
import { hasBin, testNeeds } from "../../testing/skip.ts";
import { writeOciLayout } from "../../testing/oci-fixtures.ts";
import { importOci } from "./import.ts";
import { parseRegistryRef } from "./registry.ts";

const base = mkdtempSync(join(tmpdir(), "banger-oci-registry-"));
const layout = join(base, "layout");
writeOciLayout(layout, [{ layers: [[{ path: "etc/hostname", data: "from-registry\n" }], [{ path: "etc/os-release", data: "ID=test\n", uid: 1000 }]] }]);
const amd64 = JSON.parse(readFileSync(join(layout, "index.json"), "utf8")).manifests[0];
const index = JSON.stringify({
  schemaVersion: 2,
  mediaType: "application/vnd.oci.image.index.v1+json",
  manifests: [{ ...amd64, digest: `sha256:${"0".repeat(64)}`, platform: { os: "linux", architecture: "arm64" } }, amd64],
});
const requests: string[] = [];

/** An endless body of zeros, in 64 KiB chunks. */
function endless(): ReadableStream<Uint8Array> {
  const chunk = new Uint8Array(64 * 1024);
  return new ReadableStream({ pull: (c) => c.enqueue(chunk) });
}

/** A loopback registry with a Docker-Hub-style bearer challenge, serving the fixture layout. */
const server: ReturnType<typeof Bun.serve> = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  fetch(req): Response {
    const url = new URL(req.url);
    requests.push(url.pathname);
    if (url.pathname === "/token") return Response.json({ token: `tok-${url.searchParams.get("scope")}` });
    if (!req.headers.get("authorization")?.startsWith("Bearer tok-repository:test/")) {
      return new Response("no", {
        status: 401,
        headers: { "www-authenticate": `Bearer realm="http://127.0.0.1:${server.port}/token",service="test",scope="repository:test/app:pull"` },
      });
    }
    const m = /^\/v2\/test\/(app|evil|endless)\/(manifests|blobs)\/(.+)$/.exec(url.pathname);
    if (m?.[1] === "evil") return new Response("{}"); // a registry that answers anything for any digest
    // A registry that never stops sending: every manifest but the fixture's, and every blob.
    if (m?.[1] === "endless" && !(m[2] === "manifests" && m[3] === amd64.digest)) return new Response(endless());
    if (m?.[2] === "manifests" && m[3] === "multi") return new Response(index, { headers: { "content-type": "application/vnd.oci.image.index.v1+json" } });
    const digest = m?.[3];
    if (!digest?.startsWith("sha256:")) return new Response("unknown", { status: 404 });
    const file = Bun.file(join(layout, "blobs/sha256", digest.slice(7)));
    return file.size ? new Response(file) : new Response("unknown", { status: 404 });
  },
});
afterAll(() => {
  server.stop(true);
  rmSync(base, { recursive: true, force: true });
});

test("parses registry references; loopback uses http", () => {
  expect(parseRegistryRef("registry://127.0.0.1:5000/test/app:1.0")).toMatchObject({ base: "http://127.0.0.1:5000", name: "test/app", reference: "1.0" });
  expect(parseRegistryRef("registry://registry-1.docker.io/library/debian")).toMatchObject({ base: "https://registry-1.docker.io", reference: "latest" });
  expect(() => parseRegistryRef("registry://host/../x")).toThrow(BangerError);
});

const tools: Array<[boolean, string]> = [[hasBin("mkfs.ext4") && hasBin("debugfs"), "e2fsprogs not installed"]];

testNeeds(
  "pulls the linux/amd64 image of an index from a local registry with token auth and imports it",
  tools,
  async () => {
    const d = join(base, "pull");
    mkdirSync(join(d, "work"), { recursive: true });
    const r = await importOci({
      source: `registry://127.0.0.1:${server.port}/test/app:multi`,
      outPath: join(d, "r.ext4"),
      workDir: join(d, "work"),
      runner: hostRunner,
    });
    expect(r.digest).toBe(amd64.digest);
    expect(r.layers).toBe(2);
    const cat = Bun.spawnSync(["debugfs", "-R", "cat /etc/hostname", r.rootfs], { stderr: "pipe" }).stdout.toString();
    expect(cat).toBe("from-registry\n");
    expect(requests).toContain("/token");
    expect(requests.some((p) => p.includes("0000000000"))).toBe(false);
  },
  30_000,
);

test("refuses a manifest whose content does not match the digest asked for", async () => {
  const d = join(base, "bad");
  mkdirSync(join(d, "work"), { recursive: true });
  const err = await importOci({
    source: `registry://127.0.0.1:${server.port}/test/evil@${amd64.digest}`,
    outPath: join(d, "r.ext4"),
    workDir: join(d, "work"),
    runner: hostRunner,
  }).catch((e) => e);
  expect(err).toBeInstanceOf(BangerError);
  expect(err.message).toContain("does not match its digest");
});

test("a registry that never stops sending is cut off at the import cap, for manifests and blobs", async () => {
  const d = join(base, "endless");
  mkdirSync(join(d, "work"), { recursive: true });
  const err = await importOci({
    source: `registry://127.0.0.1:${server.port}/test/endless:1`,
    outPath: join(d, "r.ext4"),
    workDir: join(d, "work"),
    runner: hostRunner,
    limits: { maxBytes: 8 << 20, maxEntries: 100 },
  }).catch((e) => e);
  expect(err).toBeInstanceOf(BangerError);
  expect(err.message).toContain("is larger than 16 MiB; no real manifest is");
  const blob = await importOci({
    source: `registry://127.0.0.1:${server.port}/test/endless@${amd64.digest}`,
    outPath: join(d, "r2.ext4"),
    workDir: join(d, "work"),
    runner: hostRunner,
    limits: { maxBytes: 8 << 20, maxEntries: 100 },
  }).catch((e) => e);
  expect(blob.message).toMatch(/blob sha256:[0-9a-f]+ takes the download past the import cap of 8 MiB/);
}, 30_000);
