import { readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/** One schema node from the swagger `definitions` (only the parts Firecracker's serde types enforce). */
export interface SchemaNode {
  type?: string;
  $ref?: string;
  enum?: string[];
  required?: string[];
  properties?: Record<string, SchemaNode>;
  minimum?: number;
  maximum?: number;
  items?: SchemaNode;
}

/** The parsed API spec: paths (method -> body definition name) and definitions. */
export interface ApiSpec {
  version: string;
  definitions: Record<string, SchemaNode>;
  /** "PUT /drives/{drive_id}" -> body definition name, or null when the operation takes no body. */
  operations: Map<string, string | null>;
}

/** The spec shipped beside the project; FAKE_FC_API_SPEC overrides it. */
export function defaultSpecPath(env: Record<string, string | undefined> = process.env): string {
  return env.FAKE_FC_API_SPEC || resolve(import.meta.dir, "../../../../shared/firecracker/firecracker.yaml");
}

type SpecDoc = {
  info: { version: string };
  paths: Record<string, Record<string, { parameters?: Array<{ in: string; schema?: { $ref?: string } }> }>>;
  definitions: Record<string, SchemaNode>;
};

/**
 * Loads the swagger file at runtime so the fake follows the spec rather than a hand copy. Parsing the
 * YAML costs ~150 ms, too much for a fake started 50 times in a benchmark, so the parsed document is
 * cached as JSON keyed by the file's size and mtime.
 */
export function loadApiSpec(path = defaultSpecPath(), cacheDir = tmpdir()): ApiSpec {
  const st = statSync(path);
  const cache = join(cacheDir, `fake-fc-spec-${st.size}-${Math.trunc(st.mtimeMs)}.json`);
  let doc: SpecDoc;
  try {
    doc = JSON.parse(readFileSync(cache, "utf8"));
  } catch {
    doc = parseSpecYaml(path);
    const tmp = `${cache}.${process.pid}`;
    writeFileSync(tmp, JSON.stringify(doc));
    renameSync(tmp, cache);
  }
  return specFromDoc(doc);
}

function parseSpecYaml(path: string): SpecDoc {
  // Loaded lazily: only a cache miss pays for the YAML parser.
  const { parse } = require("yaml") as typeof import("yaml");
  return parse(readFileSync(path, "utf8")) as SpecDoc;
}

function specFromDoc(doc: SpecDoc): ApiSpec {
  const operations = new Map<string, string | null>();
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const ref = op.parameters?.find((p) => p.in === "body")?.schema?.$ref;
      operations.set(`${method.toUpperCase()} ${path}`, ref ? refName(ref) : null);
    }
  }
  return { version: doc.info.version, definitions: doc.definitions, operations };
}

function refName(ref: string): string {
  return ref.replace("#/definitions/", "");
}

/** Matches a concrete path against the spec's templates; returns the template and its path parameter. */
export function matchOperation(spec: ApiSpec, method: string, path: string): { op: string; body: string | null; param?: string } | null {
  for (const [op, body] of spec.operations) {
    const [m, template] = op.split(" ") as [string, string];
    if (m !== method) continue;
    const brace = template.indexOf("{");
    if (brace < 0) {
      if (template === path) return { op, body };
      continue;
    }
    const prefix = template.slice(0, brace);
    const rest = path.slice(prefix.length);
    if (path.startsWith(prefix) && rest.length > 0 && !rest.includes("/")) return { op, body, param: rest };
  }
  return null;
}

// serde reports the Rust integer type it expected; these are Firecracker's field types.
const RUST_INT: Record<string, string> = {
  vcpu_count: "u8",
  mem_size_mib: "usize",
  guest_cid: "u32",
  mtu: "u16",
  amount_mib: "u32",
  stats_polling_interval_s: "u16",
};

// Bodies whose Rust type accepts arbitrary JSON (no deny_unknown_fields).
const OPEN_DEFINITIONS = new Set(["MmdsContentsObject"]);

/** Validates a raw JSON body like serde would; returns serde's message (without Firecracker's prefix) or null. */
export function validateBody(spec: ApiSpec, definition: string, raw: string): string | null {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return `expected value at ${position(raw, firstBadOffset(raw))}`;
  }
  return checkNode(spec, { $ref: `#/definitions/${definition}` }, value, "", raw);
}

function checkNode(spec: ApiSpec, node: SchemaNode, value: unknown, field: string, raw: string): string | null {
  const name = node.$ref ? refName(node.$ref) : field;
  const def = node.$ref ? (spec.definitions[name] ?? {}) : node;
  if (def.enum) return checkEnum(def.enum, value, raw);
  switch (def.type ?? (def.properties ? "object" : undefined)) {
    case "object":
      return checkObject(spec, def, name, value, raw);
    case "integer":
      return checkInteger(def, field, value, raw);
    case "boolean":
      return typeof value === "boolean" ? null : invalidType(value, "a boolean", raw);
    case "string":
      return typeof value === "string" ? null : invalidType(value, "a string", raw);
    case "array":
      if (!Array.isArray(value)) return invalidType(value, "a sequence", raw);
      for (const item of value) {
        const err = checkNode(spec, def.items ?? {}, item, field, raw);
        if (err) return err;
      }
      return null;
    default:
      return null;
  }
}

function checkObject(spec: ApiSpec, def: SchemaNode, name: string, value: unknown, raw: string): string | null {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return invalidType(value, `struct ${name}`, raw);
  if (OPEN_DEFINITIONS.has(name)) return null;
  const props = def.properties ?? {};
  for (const [key, v] of Object.entries(value)) {
    const prop = props[key];
    if (!prop) return `unknown field \`${key}\`, ${expected(Object.keys(props), "fields")} at ${position(raw, keyEnd(raw, key))}`;
    const err = checkNode(spec, prop, v, key, raw);
    if (err) return err;
  }
  for (const key of def.required ?? []) {
    if (!(key in value)) return `missing field \`${key}\` at ${position(raw, raw.trimEnd().length)}`;
  }
  return null;
}

function checkInteger(def: SchemaNode, field: string, value: unknown, raw: string): string | null {
  const rust = RUST_INT[field] ?? "u64";
  if (typeof value !== "number" || !Number.isInteger(value)) return invalidType(value, rust, raw);
  if (value < 0) return `invalid value: integer \`${value}\`, expected ${rust} at ${position(raw, valueEnd(raw, field))}`;
  // Range rules live in Firecracker's validation, not serde; the caller maps known ones to Firecracker's words.
  return null;
}

function checkEnum(variants: string[], value: unknown, raw: string): string | null {
  if (typeof value !== "string") return invalidType(value, "variant identifier", raw);
  if (variants.includes(value)) return null;
  const end = raw.indexOf(JSON.stringify(value)) + JSON.stringify(value).length;
  return `unknown variant \`${value}\`, ${expected(variants, "variants")} at ${position(raw, end)}`;
}

/** serde's `OneOf` wording. */
function expected(names: string[], what: string): string {
  const q = names.map((n) => `\`${n}\``);
  if (q.length === 0) return `there are no ${what}`;
  if (q.length === 1) return `expected ${q[0]}`;
  if (q.length === 2) return `expected ${q[0]} or ${q[1]}`;
  return `expected one of ${q.join(", ")}`;
}

function invalidType(value: unknown, want: string, raw: string): string {
  return `invalid type: ${describe(value)}, expected ${want} at ${position(raw, approximateValueEnd(raw, value))}`;
}

/** serde's `Unexpected` wording for a JSON value. */
function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "sequence";
  switch (typeof value) {
    case "string":
      return `string ${JSON.stringify(value)}`;
    case "boolean":
      return `boolean \`${value}\``;
    case "number":
      return Number.isInteger(value) ? `integer \`${value}\`` : `floating point \`${value}\``;
    default:
      return "map";
  }
}

function keyEnd(raw: string, key: string): number {
  const at = raw.indexOf(JSON.stringify(key));
  return at < 0 ? raw.length : at + JSON.stringify(key).length;
}

function valueEnd(raw: string, key: string): number {
  const after = keyEnd(raw, key);
  const m = /^\s*:\s*("(?:[^"\\]|\\.)*"|[^,}\]]*)/.exec(raw.slice(after));
  return m ? after + m[0].trimEnd().length : raw.length;
}

function approximateValueEnd(raw: string, value: unknown): number {
  if (value !== null && typeof value === "object") return raw.trimStart().length > 0 ? raw.length - raw.trimStart().length + 1 : 0;
  const text = JSON.stringify(value);
  const at = raw.indexOf(text);
  return at < 0 ? raw.length : at + text.length;
}

function firstBadOffset(raw: string): number {
  return raw.length - raw.trimStart().length + 1;
}

/** serde_json's "line L column C" for an offset just past the offending token. */
function position(raw: string, offset: number): string {
  const before = raw.slice(0, offset);
  const line = before.split("\n").length;
  const column = offset - (before.lastIndexOf("\n") + 1);
  return `line ${line} column ${column}`;
}
