import { parseNetPolicy } from "./vm/net-policy.ts";
import type TOML from "@iarna/toml";
import { existsSync, readFileSync } from "node:fs";
import * as v from "valibot";
import { BangerError } from "./errors.ts";
import { parseDuration, parseSize } from "./units.ts";

/** One `[[file_sync]]` entry: a host file or directory copied into the guest on every start. */
export interface FileSync {
  host: string;
  guest: string;
  mode?: string;
}

/** The validated configuration with every default applied. */
export interface Config {
  vmm: "auto" | "firecracker" | "qemu";
  accel: "auto" | "kvm" | "tcg";
  firecracker_bin: string;
  qemu_bin: string;
  default_image: string;
  default_kernel: string;
  cpus: number;
  memory: number;
  disk: string;
  bridge: string;
  subnet: string;
  tap_pool: number;
  nat: boolean;
  net: string;
  dns_listen: string;
  dns_upstream: string[];
  ssh_key: string;
  stop_grace: string;
  boot_timeout: string;
  stats_poll_interval: string;
  kernel_catalog: string;
  image_catalog: string;
  file_sync: FileSync[];
  import_max_size: string;
  import_max_entries: number;
  console_log_max: string;
  warm_cache: number;
}

/** Defaults; the README's config reference is checked against this object by a test. */
export const DEFAULTS: Config = {
  vmm: "auto",
  accel: "auto",
  firecracker_bin: "firecracker",
  qemu_bin: "qemu-system-x86_64",
  default_image: "bookworm",
  default_kernel: "default",
  cpus: 2,
  memory: 1024,
  disk: "8G",
  bridge: "banger0",
  subnet: "172.30.0.1/24",
  tap_pool: 32,
  nat: false,
  net: "none",
  dns_listen: "127.0.0.1:42069",
  dns_upstream: [],
  ssh_key: "",
  stop_grace: "10s",
  boot_timeout: "90s",
  stats_poll_interval: "5s",
  kernel_catalog: "",
  image_catalog: "",
  file_sync: [],
  import_max_size: "16G",
  import_max_entries: 1_000_000,
  console_log_max: "4M",
  warm_cache: 2,
};

const MODE_RE = /^0?[0-7]{3,4}$/;
const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$/;

const duration = v.pipe(
  v.string('expected a duration such as "10s" or "500ms"'),
  v.check((s) => parseDuration(s) !== null, 'expected a duration such as "10s" or "500ms"'),
);

function sizeAtLeast(min: number, shown: string, example: string) {
  return v.pipe(
    v.string(`expected a size such as ${example}`),
    v.check((s) => (parseSize(s) ?? 0) >= min, `expected a size of at least ${shown}, such as ${example}`),
  );
}

const fileSync = v.strictObject({
  host: v.pipe(
    v.string("expected a string"),
    v.nonEmpty("must not be empty"),
    v.check((s) => !/^~[^/]/.test(s), "`~user` paths are not supported; use `~/` or an absolute path"),
    v.check((s) => s.startsWith("/") || s.startsWith("~/"), "must be absolute or start with `~/`"),
    v.check((s) => !s.split("/").includes(".."), "must not contain `..`"),
  ),
  guest: v.pipe(
    v.string("expected a string"),
    v.nonEmpty("must not be empty"),
    v.check((s) => s.startsWith("~/") || s.startsWith("/root/"), "must be under `~/` or `/root/`"),
    v.check((s) => !s.split("/").includes(".."), "must not contain `..`"),
    v.check((s) => s !== "~/" && s !== "/root/", "must name a file or directory, not the home directory itself"),
  ),
  mode: v.optional(v.pipe(v.string('expected an octal string such as "0600"'), v.regex(MODE_RE, 'expected an octal string such as "0600"'))),
});

const schema = v.strictObject({
  vmm: v.optional(v.picklist(["auto", "firecracker", "qemu"], 'expected "auto", "firecracker" or "qemu"')),
  accel: v.optional(v.picklist(["auto", "kvm", "tcg"], 'expected "auto", "kvm" or "tcg"')),
  firecracker_bin: v.optional(v.pipe(v.string(), v.nonEmpty("must not be empty"))),
  qemu_bin: v.optional(v.pipe(v.string(), v.nonEmpty("must not be empty"))),
  default_image: v.optional(v.pipe(v.string(), v.regex(NAME_RE, "expected an image name"))),
  default_kernel: v.optional(v.pipe(v.string(), v.regex(NAME_RE, "expected a kernel name"))),
  cpus: v.optional(
    v.pipe(v.number("expected an integer"), v.integer("expected an integer"), v.minValue(1, "must be at least 1"), v.maxValue(32, "must be at most 32")),
  ),
  memory: v.optional(v.pipe(v.number("expected MiB as an integer"), v.integer("expected MiB as an integer"), v.minValue(128, "must be at least 128 (MiB)"))),
  disk: v.optional(
    v.pipe(
      v.string('expected a size such as "8G"'),
      v.check((s) => (parseSize(s) ?? 0) >= MIN_DISK_BYTES, 'expected a size of at least 1G, such as "8G"'),
    ),
  ),
  bridge: v.optional(v.pipe(v.string(), v.regex(/^[a-zA-Z0-9_-]{1,11}$/, "expected an interface name of at most 11 characters"))),
  subnet: v.optional(
    v.pipe(v.string(), v.regex(/^(\d{1,3}\.){3}\d{1,3}\/(1[6-9]|2[0-8])$/, 'expected the bridge address with a /16../28 prefix, such as "172.30.0.1/24"')),
  ),
  tap_pool: v.optional(v.pipe(v.number(), v.integer("expected an integer"), v.minValue(1, "must be at least 1"), v.maxValue(1000, "must be at most 1000"))),
  nat: v.optional(v.boolean("expected true or false")),
  net: v.optional(
    v.pipe(
      v.string("expected a string"),
      v.check((s) => netPolicyError(s) === null, 'expected none, nat or allow:<rules> such as "allow:api.example.com,*.example.org,203.0.113.0/24:443"'),
    ),
  ),
  dns_listen: v.optional(v.pipe(v.string(), v.regex(/^[0-9.]+:\d{1,5}$/, 'expected ADDRESS:PORT such as "127.0.0.1:42069"'))),
  dns_upstream: v.optional(
    v.pipe(
      v.array(
        v.pipe(
          v.string("expected a string"),
          v.check(isUpstreamAddress, 'expected an IPv4 address with an optional port, such as "192.0.2.53" or "192.0.2.53:5353"'),
        ),
        'expected a list of addresses such as ["192.0.2.53"]',
      ),
      v.maxLength(8, "at most 8 servers"),
    ),
  ),
  ssh_key: v.optional(v.string()),
  stop_grace: v.optional(duration),
  boot_timeout: v.optional(duration),
  stats_poll_interval: v.optional(duration),
  kernel_catalog: v.optional(v.string()),
  image_catalog: v.optional(v.string()),
  file_sync: v.optional(v.array(fileSync, "expected a list of [[file_sync]] tables")),
  import_max_size: v.optional(sizeAtLeast(1024 ** 2, "1M", '"16G"')),
  import_max_entries: v.optional(v.pipe(v.number("expected an integer"), v.integer("expected an integer"), v.minValue(1, "must be at least 1"))),
  console_log_max: v.optional(sizeAtLeast(64 * 1024, "64K", '"4M"')),
  warm_cache: v.optional(
    v.pipe(v.number("expected an integer"), v.integer("expected an integer"), v.minValue(0, "must be 0 (off) or more"), v.maxValue(100, "must be at most 100")),
  ),
});

/** `IP` or `IP:PORT` (IPv4): one upstream resolver for guests. */
function isUpstreamAddress(s: string): boolean {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?$/.exec(s);
  return !!m && m[1]!.split(".").every((o) => Number(o) <= 255) && (m[2] === undefined || (Number(m[2]) >= 1 && Number(m[2]) <= 65535));
}

/** The smallest work disk banger accepts. */
export const MIN_DISK_BYTES = 1024 ** 3;

function issuePath(issue: v.BaseIssue<unknown>): string {
  const parts: string[] = [];
  for (const item of issue.path ?? []) {
    const key = (item as { key: unknown }).key;
    if (typeof key === "number") parts[parts.length - 1] = `${parts[parts.length - 1]}[${key}]`;
    else parts.push(String(key));
  }
  return parts.join(".");
}

/** Validates parsed TOML; every problem names its key (and list index). */
export function validateConfig(raw: unknown, source = "config.toml"): Config {
  const result = v.safeParse(schema, raw, { abortEarly: false });
  if (!result.success) {
    const lines = result.issues.map((issue) => {
      const key = issuePath(issue);
      const unknownKey = issue.expected === "never";
      return unknownKey ? `${key}: unknown key` : `${key}: ${issue.message}`;
    });
    throw new BangerError("invalid_argument", `${source}: ${lines.join("; ")}`, {
      hint: "Fix the key in the config file; `banger config show` prints the effective configuration and the README lists every key.",
    });
  }
  const config = { ...DEFAULTS, ...result.output } as Config;
  // `nat = true` predates `net`: it still means NAT by default unless `net` says otherwise.
  if (result.output.net === undefined && result.output.nat) config.net = "nat";
  return config;
}

function netPolicyError(text: string): string | null {
  try {
    parseNetPolicy(text);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/** The TOML library, loaded when a config file is there to read (most CLI runs have none to parse). */
function toml(): typeof TOML {
  return require("@iarna/toml") as typeof TOML;
}

/** Reads and validates the config file; a missing file means all defaults. */
export function loadConfig(paths: { configFile: string }): Config {
  if (!existsSync(paths.configFile)) return { ...DEFAULTS };
  let raw: unknown;
  try {
    raw = toml().parse(readFileSync(paths.configFile, "utf8"));
  } catch (err) {
    throw new BangerError("invalid_argument", `${paths.configFile}: not valid TOML: ${(err as Error).message.split("\n")[0]}`, {
      hint: "Fix the syntax, or move the file away to use the defaults.",
    });
  }
  return validateConfig(raw, paths.configFile);
}

/** Renders a config as TOML. */
export function renderConfig(config: Config): string {
  return toml().stringify(config as unknown as TOML.JsonMap);
}

/** Parsed duration settings in milliseconds. */
export function configDurations(config: Config) {
  return {
    stopGraceMs: parseDuration(config.stop_grace) ?? 10_000,
    bootTimeoutMs: parseDuration(config.boot_timeout) ?? 90_000,
    statsPollMs: parseDuration(config.stats_poll_interval) ?? 5_000,
  };
}

/** Parsed size settings in bytes. */
export function configSizes(config: Config) {
  return {
    importMaxBytes: parseSize(config.import_max_size) ?? 16 * 1024 ** 3,
    consoleLogMaxBytes: parseSize(config.console_log_max) ?? 4 * 1024 ** 2,
  };
}
