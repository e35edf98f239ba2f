import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { downloadVerified, fetchCatalog, findEntry, parseCatalog } from "./catalog.ts";

const dir = mkdtempSync(join(tmpdir(), "banger-catalog-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sha = (s: string) => new Bun.CryptoHasher("sha256").update(s).digest("hex");
const stub = (routes: Record<string, () => Response>) => async (url: string) => (routes[url] ?? (() => new Response("", { status: 404 })))();

describe("parseCatalog", () => {
  test("accepts a list and names the bad entry and field", () => {
    const ok = parseCatalog([{ name: "a", version: "1", url: "http://x/a", sha256: sha("a"), size: 1 }], "t");
    expect(ok[0].name).toBe("a");
    expect(() => parseCatalog([ok[0], { name: "b", url: "u", sha256: "xyz" }], "t")).toThrow(/entry 1: sha256/);
    expect(() => parseCatalog({ nope: 1 }, "t")).toThrow(/not a JSON array/);
    expect(() => parseCatalog([{ name: "../x", url: "u", sha256: sha("") }], "t")).toThrow(/entry 0: name/);
  });
});

describe("fetchCatalog / findEntry", () => {
  test("HTTP errors are unavailable, unknown names are not_found", async () => {
    await expect(fetchCatalog("http://c/404", stub({}))).rejects.toMatchObject({ code: "unavailable" });
    const entries = await fetchCatalog("http://c/ok", stub({ "http://c/ok": () => Response.json([{ name: "k", url: "u", sha256: sha("") }]) }));
    expect(findEntry(entries, "k", "kernel").url).toBe("u");
    expect(() => findEntry(entries, "z", "kernel")).toThrow(/available: k/);
  });
});

describe("downloadVerified", () => {
  test("writes the file only when sha256 and size match", async () => {
    const fetch = stub({ "http://d/f": () => new Response("payload") });
    const dest = join(dir, "ok", "f");
    expect(await downloadVerified({ url: "http://d/f", sha256: sha("payload"), size: 7, dest, fetch })).toEqual({ sha256: sha("payload"), size: 7 });
    expect(await Bun.file(dest).text()).toBe("payload");

    const bad = join(dir, "bad", "f");
    await expect(downloadVerified({ url: "http://d/f", sha256: sha("other"), dest: bad, fetch })).rejects.toMatchObject({ code: "failed_precondition" });
    await expect(downloadVerified({ url: "http://d/f", sha256: sha("payload"), size: 8, dest: bad, fetch })).rejects.toThrow(/size mismatch/);
    expect(existsSync(bad)).toBe(false);
    expect(readdirSync(join(dir, "bad"))).toEqual([]);
  });
});
