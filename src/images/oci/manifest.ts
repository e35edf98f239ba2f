import { BangerError } from "../../errors.ts";
import type { ImageSource } from "./source.ts";

/** The parts of an OCI image config banger uses; the full JSON is kept as read. */
export interface OciImageConfig {
  architecture?: string;
  os?: string;
  config?: {
    Env?: string[];
    Cmd?: string[];
    Entrypoint?: string[];
    User?: string;
    WorkingDir?: string;
    ExposedPorts?: Record<string, unknown>;
    Labels?: Record<string, string>;
  };
  rootfs?: { type?: string; diff_ids?: string[] };
  [key: string]: unknown;
}

/** One layer to apply: where its blob is in the source and what digests to check it against. */
export interface LayerRef {
  path: string;
  /** Digest of the stored (maybe compressed) blob, when the source is content-addressed. */
  digest?: string;
  /** Digest of the uncompressed tar, from the config's rootfs.diff_ids. */
  diffId?: string;
}

/** The image chosen from a source: its identity, config and layers bottom-up. */
export interface SelectedImage {
  digest: string;
  config: OciImageConfig;
  layers: LayerRef[];
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  platform?: { os?: string; architecture?: string };
  annotations?: Record<string, string>;
}

const INDEX_TYPES = ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];
const REF_KEYS = ["org.opencontainers.image.ref.name", "io.containerd.image.name"];

/** sha256 of bytes as an OCI digest string. */
export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${new Bun.CryptoHasher("sha256").update(bytes).digest("hex")}`;
}

/** The path of a blob in an OCI layout, refusing digests that are not plain sha256 hex. */
export function blobPath(digest: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new BangerError("invalid_argument", `unsupported or malformed digest ${JSON.stringify(digest)}; only sha256 is supported`);
  return `blobs/sha256/${m[1]}`;
}

/** Reads a content-addressed blob and checks it hashes to its digest. */
export async function readBlob(src: ImageSource, digest: string): Promise<Uint8Array> {
  const bytes = await src.read(blobPath(digest));
  const actual = sha256Digest(bytes);
  if (actual !== digest) throw new BangerError("invalid_argument", `blob ${digest} is corrupt: its content hashes to ${actual}`);
  return bytes;
}

/** Parses JSON from a source file, turning syntax errors into an error naming the file. */
export function parseJson<T>(bytes: Uint8Array, what: string): T {
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as T;
  } catch (err) {
    throw new BangerError("invalid_argument", `${what} is not valid JSON: ${(err as Error).message}`);
  }
}

/** True when a user-given ref names this image: exact, by tag, or without the docker.io prefixes. */
export function refMatches(ref: string, name: string): boolean {
  const norm = (s: string) => s.replace(/^docker\.io\/(library\/)?/, "");
  if (ref === name || norm(ref) === norm(name)) return true;
  if (!name.includes(":") || name.indexOf(":") < name.lastIndexOf("/")) return ref === name;
  return name.endsWith(`:${ref}`) || (!ref.includes(":") && norm(name) === `${norm(ref)}:latest`);
}

function pickOne<T>(items: T[], names: (t: T) => string[], ref: string | undefined, isDigest: (t: T) => boolean): T {
  const found = ref === undefined ? items : items.filter((t) => isDigest(t) || names(t).some((n) => refMatches(ref, n)));
  const all = items.flatMap(names).join(", ") || "(untagged images)";
  if (found.length === 0) throw new BangerError("not_found", `no image ${JSON.stringify(ref)} in the source; it holds: ${all}`);
  if (found.length > 1) {
    throw new BangerError("invalid_argument", `the source holds ${found.length} images (${all}); say which one`, { hint: "Pass --ref with a tag or digest." });
  }
  return found[0]!;
}

function checkPlatform(config: OciImageConfig): void {
  const os = config.os ?? "linux";
  const arch = config.architecture ?? "amd64";
  if (os !== "linux" || arch !== "amd64") {
    throw new BangerError("failed_precondition", `the image is ${os}/${arch}; banger guests are linux/amd64`, {
      hint: "Import the linux/amd64 variant of the image.",
    });
  }
}

/** Follows an index (or manifest list) down to the linux/amd64 image manifest. */
async function resolveManifest(
  src: ImageSource,
  desc: Descriptor,
  depth = 0,
): Promise<{ digest: string; manifest: { config: Descriptor; layers: Descriptor[] } }> {
  const bytes = await readBlob(src, desc.digest);
  const doc = parseJson<{ mediaType?: string; manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] }>(bytes, `manifest ${desc.digest}`);
  if (doc.manifests || INDEX_TYPES.includes(doc.mediaType ?? "")) {
    if (depth >= 4) throw new BangerError("invalid_argument", `image index ${desc.digest} nests too deeply`);
    const amd64 = (doc.manifests ?? []).filter((m) => !m.platform || (m.platform.os === "linux" && m.platform.architecture === "amd64"));
    if (amd64.length === 0) throw new BangerError("failed_precondition", `image ${desc.digest} has no linux/amd64 variant`);
    return resolveManifest(src, amd64[0]!, depth + 1);
  }
  if (!doc.config || !doc.layers) throw new BangerError("invalid_argument", `manifest ${desc.digest} has no config or layers`);
  return { digest: desc.digest, manifest: { config: doc.config, layers: doc.layers } };
}

async function selectOci(src: ImageSource, ref: string | undefined): Promise<SelectedImage> {
  const index = parseJson<{ manifests?: Descriptor[] }>(await src.read("index.json"), "index.json");
  const names = (d: Descriptor) => REF_KEYS.map((k) => d.annotations?.[k]).filter((n): n is string => !!n);
  const all = index.manifests ?? [];
  // A digest may name a platform manifest inside an index rather than a top-level entry.
  const direct = ref?.startsWith("sha256:") && !all.some((d) => d.digest === ref) && src.has(blobPath(ref));
  const chosen = direct ? { digest: ref! } : pickOne(all, names, ref, (d) => d.digest === ref);
  const { digest, manifest } = await resolveManifest(src, chosen);
  const config = parseJson<OciImageConfig>(await readBlob(src, manifest.config.digest), "image config");
  checkPlatform(config);
  const diffIds = config.rootfs?.diff_ids ?? [];
  const layers = manifest.layers.map((l, i) => ({
    path: blobPath(l.digest),
    digest: l.digest,
    diffId: diffIds.length === manifest.layers.length ? diffIds[i] : undefined,
  }));
  return { digest, config, layers };
}

async function selectDocker(src: ImageSource, ref: string | undefined): Promise<SelectedImage> {
  type Entry = { Config: string; RepoTags?: string[] | null; Layers: string[] };
  const entries = parseJson<Entry[]>(await src.read("manifest.json"), "manifest.json");
  const configDigests = new Map<Entry, string>();
  for (const e of entries) configDigests.set(e, sha256Digest(await src.read(e.Config)));
  const chosen = pickOne(
    entries,
    (e) => e.RepoTags ?? [],
    ref,
    (e) => configDigests.get(e) === ref,
  );
  const config = parseJson<OciImageConfig>(await src.read(chosen.Config), "image config");
  checkPlatform(config);
  const diffIds = config.rootfs?.diff_ids ?? [];
  const layers = chosen.Layers.map((path, i) => ({ path, diffId: diffIds.length === chosen.Layers.length ? diffIds[i] : undefined }));
  return { digest: configDigests.get(chosen)!, config, layers };
}

/** Chooses the image (by ref when the source holds several) and lists its layers bottom-up. */
export function selectImage(src: ImageSource, ref?: string): Promise<SelectedImage> {
  return src.kind === "docker-archive" ? selectDocker(src, ref) : selectOci(src, ref);
}
