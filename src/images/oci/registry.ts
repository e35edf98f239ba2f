import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { BangerError } from "../../errors.ts";
import { concatBytes } from "../tar.ts";
import { blobPath, parseJson } from "./manifest.ts";
import { MAX_METADATA_BYTES } from "./source.ts";

/** A parsed `registry://host[:port]/name[:tag|@digest]` reference. */
export interface RegistryRef {
  base: string;
  name: string;
  reference: string;
  display: string;
}

const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

/** Parses a registry source; loopback registries are spoken to over plain HTTP, all others over HTTPS. */
export function parseRegistryRef(source: string): RegistryRef {
  const component = "[a-z0-9]+(?:[._-][a-z0-9]+)*";
  const re = new RegExp(
    `^registry://([A-Za-z0-9.-]+(?::\\d+)?|\\[::1\\](?::\\d+)?)/(${component}(?:/${component})*)(?::([\\w][\\w.-]{0,127})|@(sha256:[0-9a-f]{64}))?$`,
  );
  const m = re.exec(source);
  if (!m) {
    throw new BangerError("invalid_argument", `${JSON.stringify(source)} is not a registry reference`, {
      hint: "Use registry://HOST/NAME:TAG, e.g. registry://registry-1.docker.io/library/debian:bookworm",
    });
  }
  const host = m[1]!;
  const local = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/.test(host);
  const reference = m[4] ?? m[3] ?? "latest";
  return { base: `${local ? "http" : "https"}://${host}`, name: m[2]!, reference, display: `${host}/${m[2]}${m[4] ? "@" : ":"}${reference}` };
}

type Fetch = (url: string, init?: RequestInit) => Promise<Response>;

/** Fetches with anonymous bearer-token auth: one 401 challenge is answered, as Docker Hub expects. */
async function get(fetchFn: Fetch, url: string, accept: string, auth: { token?: string }): Promise<Response> {
  const headers = (): Record<string, string> => ({ accept, ...(auth.token ? { authorization: `Bearer ${auth.token}` } : {}) });
  let res = await fetchFn(url, { headers: headers() });
  const challenge = res.headers.get("www-authenticate") ?? "";
  if (res.status === 401 && /^bearer /i.test(challenge)) {
    const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!]));
    const tokenUrl = new URL(params.realm ?? "");
    for (const k of ["service", "scope"]) if (params[k]) tokenUrl.searchParams.set(k, params[k]);
    const tr = await fetchFn(tokenUrl.toString());
    const body = (await tr.json().catch(() => ({}))) as { token?: string; access_token?: string };
    auth.token = body.token ?? body.access_token;
    res = await fetchFn(url, { headers: headers() });
  }
  if (!res.ok) throw new BangerError(res.status === 404 ? "not_found" : "unavailable", `GET ${url} answered ${res.status}`);
  return res;
}

/** What a pull may download: `left` bytes in all (the import's cap), shared by every blob. */
interface PullBudget {
  left: number;
  max: number;
}

function overBudget(ref: RegistryRef, what: string, budget: PullBudget): BangerError {
  return new BangerError("invalid_argument", `${ref.display}: ${what} takes the download past the import cap of ${Math.round(budget.max / 1024 ** 2)} MiB`, {
    hint: "The registry sent more than the image can need; raise import_max_size in the config if the image is genuine.",
  });
}

/** Reads a manifest response, refusing one larger than any real manifest. */
async function readSmall(res: Response, what: string): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body ?? []) {
    size += chunk.length;
    if (size > MAX_METADATA_BYTES) throw new BangerError("invalid_argument", `${what} is larger than ${MAX_METADATA_BYTES >> 20} MiB; no real manifest is`);
    parts.push(chunk);
  }
  return concatBytes(parts);
}

/** Streams a blob to disk while hashing it, so a corrupt or substituted blob never lands. */
async function saveBlob(fetchFn: Fetch, ref: RegistryRef, digest: string, dir: string, auth: { token?: string }, budget: PullBudget): Promise<void> {
  const path = join(dir, blobPath(digest));
  const res = await get(fetchFn, `${ref.base}/v2/${ref.name}/blobs/${digest}`, "*/*", auth);
  const hasher = new Bun.CryptoHasher("sha256");
  const writer = Bun.file(path).writer();
  try {
    for await (const chunk of res.body ?? []) {
      budget.left -= chunk.length;
      if (budget.left < 0) throw overBudget(ref, `blob ${digest}`, budget);
      hasher.update(chunk);
      writer.write(chunk);
    }
  } finally {
    await writer.end();
  }
  if (`sha256:${hasher.digest("hex")}` !== digest) {
    rmSync(path, { force: true });
    throw new BangerError("invalid_argument", `blob ${digest} from ${ref.display} does not match its digest`);
  }
}

async function saveManifest(fetchFn: Fetch, ref: RegistryRef, reference: string, dir: string, auth: { token?: string }) {
  const res = await get(fetchFn, `${ref.base}/v2/${ref.name}/manifests/${reference}`, MANIFEST_TYPES, auth);
  const bytes = await readSmall(res, `manifest ${reference} from ${ref.display}`);
  const digest = `sha256:${new Bun.CryptoHasher("sha256").update(bytes).digest("hex")}`;
  if (reference.startsWith("sha256:") && digest !== reference)
    throw new BangerError("invalid_argument", `manifest ${reference} from ${ref.display} does not match its digest`);
  await Bun.write(join(dir, blobPath(digest)), bytes);
  const doc = parseJson(bytes, `manifest ${reference} from ${ref.display}`) as {
    mediaType?: string;
    manifests?: Array<{ digest: string; platform?: { os?: string; architecture?: string } }>;
    config?: { digest: string };
    layers?: Array<{ digest: string }>;
  };
  return { digest, size: bytes.length, mediaType: doc.mediaType ?? res.headers.get("content-type") ?? "", doc };
}

/**
 * Pulls one image (the linux/amd64 variant of an index) from a registry with the OCI
 * distribution API into an OCI layout directory, verifying every digest on the way.
 */
export async function pullToLayout(source: string, dir: string, fetchFn: Fetch = fetch, maxBytes = Number.MAX_SAFE_INTEGER): Promise<RegistryRef> {
  const ref = parseRegistryRef(source);
  const budget: PullBudget = { left: maxBytes, max: maxBytes };
  const auth: { token?: string } = {};
  mkdirSync(join(dir, "blobs/sha256"), { recursive: true });
  let top = await saveManifest(fetchFn, ref, ref.reference, dir, auth);
  if (top.doc.manifests) {
    const pick = top.doc.manifests.find((m) => !m.platform || (m.platform.os === "linux" && m.platform.architecture === "amd64"));
    if (!pick) throw new BangerError("failed_precondition", `${ref.display} has no linux/amd64 image`);
    top = await saveManifest(fetchFn, ref, pick.digest, dir, auth);
  }
  if (!top.doc.config || !top.doc.layers) throw new BangerError("invalid_argument", `${ref.display}: manifest has no config or layers`);
  for (const d of [top.doc.config.digest, ...top.doc.layers.map((l) => l.digest)]) await saveBlob(fetchFn, ref, d, dir, auth, budget);
  const descriptor = { mediaType: top.mediaType, digest: top.digest, size: top.size, annotations: { "org.opencontainers.image.ref.name": ref.display } };
  await Bun.write(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await Bun.write(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [descriptor] }));
  return ref;
}
