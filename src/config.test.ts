import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import TOML from "@iarna/toml";
import { configSizes, DEFAULTS, validateConfig } from "./config.ts";
import { projectRoot } from "./testing/skip.ts";

describe("config", () => {
  test("happy path with file_sync", () => {
    const c = validateConfig({
      cpus: 4,
      file_sync: [
        { host: "~/.gitconfig", guest: "~/.gitconfig" },
        { host: "/etc/hosts", guest: "/root/x/hosts", mode: "0644" },
      ],
    });
    expect(c.cpus).toBe(4);
    expect(c.memory).toBe(DEFAULTS.memory);
    expect(c.file_sync).toHaveLength(2);
  });

  const invalid: Array<[string, unknown, string]> = [
    ["empty host", { host: "", guest: "~/a" }, "file_sync[0].host: must not be empty"],
    ["empty guest", { host: "~/a", guest: "" }, "file_sync[0].guest: must not be empty"],
    ["relative host", { host: "a/b", guest: "~/a" }, "file_sync[0].host: must be absolute or start with `~/`"],
    ["host with ..", { host: "~/../etc/shadow", guest: "~/a" }, "file_sync[0].host: must not contain `..`"],
    ["guest with ..", { host: "~/a", guest: "/root/../etc/passwd" }, "file_sync[0].guest: must not contain `..`"],
    ["~user host", { host: "~bob/.ssh", guest: "~/a" }, "file_sync[0].host: `~user` paths are not supported"],
    ["guest outside /root", { host: "~/a", guest: "/etc/a" }, "file_sync[0].guest: must be under `~/` or `/root/`"],
    ["guest relative", { host: "~/a", guest: "a" }, "file_sync[0].guest: must be under `~/` or `/root/`"],
    ["malformed mode", { host: "~/a", guest: "~/a", mode: "rwx" }, "file_sync[0].mode: expected an octal string"],
    ["mode out of range", { host: "~/a", guest: "~/a", mode: "0999" }, "file_sync[0].mode"],
    ["numeric mode", { host: "~/a", guest: "~/a", mode: 600 }, "file_sync[0].mode"],
    ["unknown entry key", { host: "~/a", guest: "~/a", owner: "me" }, "file_sync[0].owner: unknown key"],
    ["missing guest", { host: "~/a" }, "file_sync[0].guest"],
  ];
  for (const [name, entry, message] of invalid) {
    test(`file_sync rejects ${name}, naming the entry index`, () => {
      expect(() => validateConfig({ file_sync: [{ host: "~/ok", guest: "~/ok" }, entry].reverse() })).toThrow(message);
    });
  }

  test("errors name the later entry index too", () => {
    expect(() =>
      validateConfig({
        file_sync: [
          { host: "~/ok", guest: "~/ok" },
          { host: "rel", guest: "~/a" },
        ],
      }),
    ).toThrow("file_sync[1].host");
  });

  test("dns_upstream takes IPv4 addresses with optional ports; anything else names the entry", () => {
    expect(validateConfig({ dns_upstream: ["192.0.2.53", "198.18.7.2:5353"] }).dns_upstream).toEqual(["192.0.2.53", "198.18.7.2:5353"]);
    expect(validateConfig({}).dns_upstream).toEqual([]);
    expect(() => validateConfig({ dns_upstream: ["dns.example.com"] })).toThrow("dns_upstream[0]: expected an IPv4 address");
    expect(() => validateConfig({ dns_upstream: ["192.0.2.1", "300.0.0.1"] })).toThrow("dns_upstream[1]");
    expect(() => validateConfig({ dns_upstream: ["192.0.2.1:0"] })).toThrow("dns_upstream[0]");
    expect(() => validateConfig({ dns_upstream: "192.0.2.1" })).toThrow("dns_upstream: expected a list");
  });

  test("import and console caps: sizes with a floor, a positive entry count, parsed to bytes", () => {
    const c = validateConfig({ import_max_size: "2G", import_max_entries: 5000, console_log_max: "1M" });
    expect(configSizes(c)).toEqual({ importMaxBytes: 2 * 1024 ** 3, consoleLogMaxBytes: 1024 ** 2 });
    expect(configSizes(validateConfig({}))).toEqual({ importMaxBytes: 16 * 1024 ** 3, consoleLogMaxBytes: 4 * 1024 ** 2 });
    expect(() => validateConfig({ console_log_max: "1K" })).toThrow("console_log_max: expected a size of at least 64K");
    expect(() => validateConfig({ import_max_size: "lots" })).toThrow("import_max_size: expected a size of at least 1M");
    expect(() => validateConfig({ import_max_entries: 0 })).toThrow("import_max_entries: must be at least 1");
  });

  test("unknown keys are reported", () => {
    expect(() => validateConfig({ cpu: 2 })).toThrow("cpu: unknown key");
  });

  test("bad values name the key", () => {
    expect(() => validateConfig({ vmm: "xen" })).toThrow("vmm: expected");
    expect(() => validateConfig({ memory: 64 })).toThrow("memory: must be at least 128");
    expect(() => validateConfig({ stop_grace: "soon" })).toThrow("stop_grace: expected a duration");
    expect(() => validateConfig({ dns_listen: "localhost" })).toThrow("dns_listen");
  });

  test("the README's config reference matches the code's defaults", () => {
    const readme = readFileSync(join(projectRoot, "README.md"), "utf8");
    const section = readme.split("<!-- config-reference -->")[1]!.split("<!-- /config-reference -->")[0]!;
    const rows = section.split("\n").filter((l) => l.startsWith("| `"));
    const documented = Object.fromEntries(
      rows.map((r) => {
        const [, key, def] = r.split("|").map((c) => c.trim());
        return [key!.replaceAll("`", ""), TOML.parse(`v = ${def!.replaceAll("`", "")}`).v];
      }),
    );
    expect(documented).toEqual(JSON.parse(JSON.stringify(DEFAULTS)));
  });
});
