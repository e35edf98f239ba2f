import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { sharedDir } from "../testing/skip.ts";
import { decompressKernel, deleteKernel, importKernel, listKernelDirs, pullKernel, readKernelVersion } from "./kernels.ts";

const FIXTURE = join(sharedDir, "kernels/vmlinux-6.1.192.zst");
const FIXTURE_SHA = "dbed92b3c7338dd90fe14fa2d920ffe5ed2fc6d2df53d4ce365fe0c890b986a2";

let dir: string;
let server: ReturnType<typeof Bun.serve>;
let zst: Uint8Array;
let zstSha: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "banger-kernels-"));
  zst = new Uint8Array(await Bun.file(FIXTURE).arrayBuffer());
  zstSha = new Bun.CryptoHasher("sha256").update(zst).digest("hex");
  server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const base = `http://127.0.0.1:${server.port}`;
      const path = new URL(req.url).pathname;
      if (path === "/catalog.json") {
        return Response.json([
          { name: "good", version: "6.1.192", url: `${base}/k.zst`, sha256: zstSha, size: zst.byteLength },
          { name: "bad", version: "6.1.192", url: `${base}/k.zst`, sha256: "0".repeat(64) },
        ]);
      }
      if (path === "/k.zst") return new Response(zst);
      return new Response("no", { status: 404 });
    },
  });
});

afterAll(() => {
  server?.stop(true);
  rmSync(dir, { recursive: true, force: true });
});

const fetcher = (url: string) => fetch(url);

describe("importKernel", () => {
  test("imports the zstd fixture: version from the ELF banner, sha256 of the decompressed vmlinux", async () => {
    const kdir = join(dir, "import");
    const k = await importKernel({ src: FIXTURE, kernelsDir: kdir });
    expect(k.name).toBe("6.1.192");
    expect(k.version).toBe("6.1.192");
    expect(k.sha256).toBe(FIXTURE_SHA);
    expect(k.path).toBe(join(kdir, "6.1.192", "vmlinux"));
    expect(Bun.file(k.path).size).toBe(k.size);
    expect(await listKernelDirs(kdir)).toEqual(["6.1.192"]);
    // a plain ELF import of the same bytes under another name works too
    const plain = await importKernel({ src: k.path, kernelsDir: kdir, name: "plain" });
    expect(plain.sha256).toBe(FIXTURE_SHA);
    await expect(importKernel({ src: FIXTURE, kernelsDir: kdir })).rejects.toMatchObject({ code: "already_exists" });
    await deleteKernel(kdir, "plain");
    expect(await listKernelDirs(kdir)).toEqual(["6.1.192"]);
  });

  test("rejects files that are not an ELF vmlinux", async () => {
    const bogus = join(dir, "bogus");
    await Bun.write(bogus, "MZ not a kernel");
    await expect(importKernel({ src: bogus, kernelsDir: join(dir, "x") })).rejects.toMatchObject({ code: "invalid_argument" });
    expect(() => decompressKernel(new Uint8Array([0x28, 0xb5, 0x2f, 0xfd, 1, 2]), "t")).toThrow(BangerError);
    await expect(importKernel({ src: join(dir, "missing"), kernelsDir: dir })).rejects.toMatchObject({ code: "not_found" });
  });

  test("readKernelVersion finds the banner and ignores lookalikes", () => {
    const bytes = new TextEncoder().encode("\x7fELF...Linux version %s\0...Linux version 6.1.192 (x@y) #1 SMP");
    expect(readKernelVersion(bytes)).toBe("6.1.192");
    expect(readKernelVersion(new TextEncoder().encode("nothing"))).toBeNull();
  });
});

describe("pullKernel", () => {
  test("downloads from a catalog, verifies sha256, registers", async () => {
    const kdir = join(dir, "pull");
    const k = await pullKernel({ catalogUrl: `http://127.0.0.1:${server.port}/catalog.json`, name: "good", kernelsDir: kdir, fetch: fetcher });
    expect(k).toMatchObject({ name: "good", version: "6.1.192", sha256: FIXTURE_SHA });
    expect(readdirSync(kdir)).toEqual(["good"]);
  });

  test("a wrong sha256 is refused and nothing is left", async () => {
    const kdir = join(dir, "pull-bad");
    const err = await pullKernel({ catalogUrl: `http://127.0.0.1:${server.port}/catalog.json`, name: "bad", kernelsDir: kdir, fetch: fetcher }).catch((e) => e);
    expect(err).toBeInstanceOf(BangerError);
    expect(err.code).toBe("failed_precondition");
    expect(err.message).toContain("sha256 mismatch");
    expect(existsSync(kdir) ? readdirSync(kdir) : []).toEqual([]);
  });

  test("an unknown name lists what the catalog has", async () => {
    const err = await pullKernel({
      catalogUrl: `http://127.0.0.1:${server.port}/catalog.json`,
      name: "nope",
      kernelsDir: join(dir, "n"),
      fetch: fetcher,
    }).catch((e) => e);
    expect(err.code).toBe("not_found");
    expect(err.message).toContain("good, bad");
  });
});
