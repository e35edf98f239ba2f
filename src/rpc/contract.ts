import * as v from "valibot";
import { MIN_DISK_BYTES } from "../config.ts";
import type { WireError } from "../errors.ts";
import type { ProgressEvent, VmCreateInput, VmSetInput } from "../vm/model.ts";
import type { Results } from "./results.ts";

export type { ProgressEvent };

/** DNS-safe VM names: they become `<name>.vm`. */
export const VM_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

const vmName = v.pipe(
  v.string("expected a string"),
  v.regex(VM_NAME_RE, "must be 1-32 lowercase letters, digits or '-', starting and ending with a letter or digit"),
);
const ref = v.pipe(v.string("expected a string"), v.nonEmpty("must not be empty"), v.maxLength(64, "is too long"));
const refs = v.pipe(v.array(ref, "expected a list of VM names or ids"), v.minLength(1, "name at least one VM"), v.maxLength(256, "too many VMs"));
const cpus = v.pipe(
  v.number("expected an integer"),
  v.integer("expected an integer"),
  v.minValue(1, "must be at least 1"),
  v.maxValue(32, "must be at most 32"),
);
const memory = v.pipe(
  v.number("expected MiB as an integer"),
  v.integer("expected MiB as an integer"),
  v.minValue(128, "must be at least 128 MiB"),
  v.maxValue(1024 * 1024, "is too large"),
);
const disk = v.pipe(
  v.number("expected bytes as an integer"),
  v.integer("expected bytes as an integer"),
  v.minValue(MIN_DISK_BYTES, "must be at least 1G"),
  v.maxValue(16 * 1024 ** 4, "is too large"),
);
const artifactName = v.pipe(v.string("expected a string"), v.regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$/, "must be letters, digits, '.', '_' or '-'"));
const path = v.pipe(v.string("expected a path"), v.nonEmpty("must not be empty"), v.maxLength(4096, "is too long"));
const empty = v.strictObject({});
/** A network policy's text; the VM service parses it and names what is wrong. */
const netPolicy = v.pipe(v.string("expected none, nat or allow:<rules>"), v.nonEmpty("must not be empty"), v.maxLength(16384, "is too long"));
const group = v.pipe(v.string("expected a group name"), v.maxLength(64, "is too long"));

/** Input schemas of every RPC method; the daemon validates every call against these. */
export const METHODS = {
  "daemon.status": empty,
  "daemon.stop": empty,
  "vm.create": v.strictObject({
    name: v.optional(vmName),
    image: v.optional(artifactName),
    kernel: v.optional(artifactName),
    cpus: v.optional(cpus),
    memory: v.optional(memory),
    disk: v.optional(disk),
    nat: v.optional(v.boolean("expected true or false")),
    net: v.optional(netPolicy),
    group: v.optional(group),
    start: v.optional(v.boolean("expected true or false")),
    cold: v.optional(v.boolean("expected true or false")),
  }),
  "vm.start": v.strictObject({ refs, cold: v.optional(v.boolean("expected true or false")) }),
  "vm.pause": v.strictObject({ refs }),
  "vm.resume": v.strictObject({ refs, cold: v.optional(v.boolean("expected true or false")) }),
  "vm.suspend": v.strictObject({ refs }),
  "vm.fork": v.strictObject({
    ref,
    name: v.optional(vmName),
    count: v.optional(
      v.pipe(v.number("expected an integer"), v.integer("expected an integer"), v.minValue(1, "must be at least 1"), v.maxValue(16, "must be at most 16")),
    ),
  }),
  "vm.snapshot.create": v.strictObject({ ref, name: v.optional(artifactName), memory: v.optional(v.boolean("expected true or false")) }),
  "vm.snapshot.list": v.strictObject({ ref }),
  "vm.snapshot.restore": v.strictObject({ ref, name: artifactName }),
  "vm.snapshot.delete": v.strictObject({ ref, name: artifactName }),
  "vm.stop": v.strictObject({ refs }),
  "vm.restart": v.strictObject({ refs }),
  "vm.kill": v.strictObject({ refs }),
  "vm.delete": v.strictObject({ refs, force: v.optional(v.boolean("expected true or false")) }),
  "vm.set": v.strictObject({
    refs,
    cpus: v.optional(cpus),
    memory: v.optional(memory),
    disk: v.optional(disk),
    nat: v.optional(v.boolean("expected true or false")),
    net: v.optional(netPolicy),
    group: v.optional(group),
  }),
  "vm.list": empty,
  "vm.show": v.strictObject({ ref }),
  "vm.logs": v.strictObject({ ref, lines: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(100000))) }),
  "vm.stats": v.strictObject({ ref: v.optional(ref) }),
  "vm.health": v.strictObject({ ref }),
  "vm.ports": v.strictObject({ ref }),
  "vm.ssh-info": v.strictObject({ ref }),
  "kernel.list": empty,
  "kernel.show": v.strictObject({ name: artifactName }),
  "kernel.import": v.strictObject({ path, name: v.optional(artifactName), force: v.optional(v.boolean()) }),
  "kernel.pull": v.strictObject({ name: artifactName }),
  "kernel.build": v.strictObject({ name: v.optional(artifactName), source: v.optional(path) }),
  "kernel.delete": v.strictObject({ name: artifactName }),
  "image.list": empty,
  "cache.list": empty,
  "cache.prune": v.strictObject({ all: v.optional(v.boolean("expected true or false")) }),
  "image.show": v.strictObject({ name: artifactName }),
  "image.build": v.strictObject({
    name: v.optional(artifactName),
    kernel: v.optional(artifactName),
    packages: v.optional(v.array(v.pipe(v.string(), v.minLength(1)))),
  }),
  "image.import": v.strictObject({ source: path, name: artifactName, kernel: v.optional(artifactName), kernelFrom: v.optional(artifactName) }),
  "image.pull": v.strictObject({ name: artifactName }),
  "image.delete": v.strictObject({ name: artifactName }),
} as const;

export type Method = keyof typeof METHODS;
export type Params<M extends Method> = v.InferOutput<(typeof METHODS)[M]>;
/** The wire's `vm.create` and `vm.set` params are the domain's inputs (vm/model.ts); tsc fails here if they drift apart. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export const WIRE_MATCHES_DOMAIN: [Same<Params<"vm.create">, VmCreateInput>, Same<Omit<Params<"vm.set">, "refs">, VmSetInput>] = [true, true];
/** What method M answers (see results.ts); methods whose answer nobody reads are `unknown`. */
export type Result<M extends Method> = M extends keyof Results ? Results[M] : unknown;
/** One call to the daemon: typed by method, params and answer. */
export type Rpc = <M extends Method>(method: M, params?: Params<M>, onEvent?: (e: ProgressEvent) => void, signal?: AbortSignal) => Promise<Result<M>>;

/** Methods whose response streams progress events before the final envelope. */
export const STREAMING = new Set<Method>([
  "vm.create",
  "vm.start",
  "vm.resume",
  "vm.restart",
  "vm.snapshot.restore",
  "vm.fork",
  "image.build",
  "kernel.build",
  "image.pull",
  "kernel.pull",
  "image.import",
]);

/** The one envelope every answer travels in. */
export type Envelope<T = unknown> = { ok: true; result: T } | { ok: false; error: WireError };

/** A progress event in a streaming answer (one JSON object per line). */

/** Largest request body the daemon reads. */
export const MAX_BODY_BYTES = 1024 * 1024;

export function isMethod(x: unknown): x is Method {
  return typeof x === "string" && Object.hasOwn(METHODS, x);
}
