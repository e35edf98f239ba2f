import { randomBytes } from "node:crypto";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import * as v from "valibot";
import { BangerError } from "../errors.ts";

/** The fetch seam: the real `fetch` in production, a local server or stub in tests. */
export type Fetch = (url: string) => Promise<Response>;

const EntrySchema = v.object({
  name: v.pipe(v.string(), v.regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "name must be DNS/file safe")),
  version: v.optional(v.string(), ""),
  url: v.pipe(v.string(), v.minLength(1)),
  sha256: v.pipe(v.string(), v.regex(/^[0-9a-f]{64}$/, "sha256 must be 64 lowercase hex digits")),
  size: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
});

/** One entry of a kernel or image catalog (a JSON array at a configurable URL). */
export type CatalogEntry = v.InferOutput<typeof EntrySchema>;

/** Validates catalog JSON; errors name the entry index and field. */
export function parseCatalog(json: unknown, source: string): CatalogEntry[] {
  const list = Array.isArray(json) ? json : (json as { entries?: unknown })?.entries;
  if (!Array.isArray(list)) {
    throw new BangerError("invalid_argument", `catalog ${source} is not a JSON array of entries`, {
      hint: "Check the catalog URL in config.toml; it must serve [{name, version, url, sha256, size}]",
    });
  }
  return list.map((raw, i) => {
    const r = v.safeParse(EntrySchema, raw);
    if (r.success) return r.output;
    const issue = r.issues[0];
    const key = issue.path?.map((p) => String(p.key)).join(".") ?? "?";
    throw new BangerError("invalid_argument", `catalog ${source} entry ${i}: ${key}: ${issue.message}`, {
      hint: "Fix the catalog or point the catalog URL at a valid one",
    });
  });
}

/** Downloads and validates a catalog. */
export async function fetchCatalog(url: string, fetch: Fetch): Promise<CatalogEntry[]> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (err) {
    throw new BangerError("unavailable", `cannot fetch catalog ${url}: ${(err as Error).message}`, {
      hint: "Check the network and the catalog URL in config.toml",
      cause: err,
    });
  }
  if (!res.ok) {
    throw new BangerError("unavailable", `catalog ${url} answered HTTP ${res.status}`, {
      hint: "Check the catalog URL in config.toml",
    });
  }
  let json: unknown;
  try {
    json = await res.json();
  } catch (err) {
    throw new BangerError("invalid_argument", `catalog ${url} is not valid JSON`, { cause: err });
  }
  return parseCatalog(json, url);
}

/** Finds one entry by name; not_found lists what the catalog offers. */
export function findEntry(entries: CatalogEntry[], name: string, what: string): CatalogEntry {
  const e = entries.find((x) => x.name === name);
  if (e) return e;
  const names = entries.map((x) => x.name).join(", ") || "(empty)";
  throw new BangerError("not_found", `${what} ${name} is not in the catalog (available: ${names})`, {
    hint: `Pick one of the listed names, or import a local ${what} instead`,
  });
}

/**
 * Streams `url` into `dest`, hashing as it goes; the file appears at `dest` only when the
 * sha256 (and size, when given) match. On any failure nothing is left behind.
 */
export async function downloadVerified(opts: {
  url: string;
  sha256: string;
  size?: number;
  dest: string;
  fetch: Fetch;
}): Promise<{ sha256: string; size: number }> {
  await mkdir(dirname(opts.dest), { recursive: true });
  const tmp = join(dirname(opts.dest), `.download-${randomBytes(6).toString("hex")}`);
  try {
    const res = await opts.fetch(opts.url).catch((err: Error) => {
      throw new BangerError("unavailable", `cannot download ${opts.url}: ${err.message}`, { cause: err });
    });
    if (!res.ok || !res.body) {
      throw new BangerError("unavailable", `download ${opts.url} answered HTTP ${res.status}`, {
        hint: "Check the catalog URL; the entry may be stale",
      });
    }
    const hasher = new Bun.CryptoHasher("sha256");
    const writer = Bun.file(tmp).writer();
    let size = 0;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      hasher.update(chunk);
      writer.write(chunk);
      size += chunk.byteLength;
    }
    await writer.end();
    const sha256 = hasher.digest("hex");
    if (sha256 !== opts.sha256) {
      throw new BangerError("failed_precondition", `sha256 mismatch for ${opts.url}: got ${sha256}, catalog says ${opts.sha256}`, {
        hint: "The download is corrupt or the catalog is wrong; nothing was registered. Retry, or report the catalog entry",
      });
    }
    if (opts.size !== undefined && opts.size !== size) {
      throw new BangerError("failed_precondition", `size mismatch for ${opts.url}: got ${size} bytes, catalog says ${opts.size}`, {
        hint: "The catalog entry is inconsistent; nothing was registered",
      });
    }
    await rename(tmp, opts.dest);
    return { sha256, size };
  } finally {
    await rm(tmp, { force: true });
  }
}
