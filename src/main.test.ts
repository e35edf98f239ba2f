import { describe, expect, test } from "bun:test";
import { buildCli, joinCommandWords } from "./main.ts";
import { completionScript } from "./cli/completion.ts";

describe("command table", () => {
  const cli = buildCli();
  const names = new Set(cli.commands.map((c) => c.name));

  test("has every command of the spec", () => {
    for (const n of [
      "version",
      "doctor",
      "completion",
      "config show",
      "config path",
      "daemon status",
      "daemon stop",
      "daemon logs",
      "host setup",
      "host teardown",
      "host status",
      "kernel list",
      "kernel show",
      "kernel pull",
      "kernel import",
      "kernel build",
      "kernel delete",
      "image list",
      "image show",
      "image pull",
      "image import",
      "image build",
      "image delete",
      "vm create",
      "vm run",
      "vm start",
      "vm stop",
      "vm restart",
      "vm kill",
      "vm delete",
      "vm set",
      "vm list",
      "vm show",
      "vm logs",
      "vm stats",
      "vm health",
      "vm ports",
      "vm ssh",
      "vm workspace prepare",
      "vm workspace sync",
      "vm workspace export",
      "ssh-config install",
      "ssh-config uninstall",
      "ssh-config show",
    ]) {
      expect(names).toContain(n);
    }
  });

  test("joins multi-word commands, longest first", () => {
    expect(joinCommandWords(["vm", "workspace", "prepare", "t1"], names)).toEqual(["vm workspace prepare", "t1"]);
    expect(joinCommandWords(["vm", "create", "--name", "x"], names)).toEqual(["vm create", "--name", "x"]);
    expect(joinCommandWords(["doctor"], names)).toEqual(["doctor"]);
  });

  test("vm run's flags parse: --no-workspace, --cwd, --keep, --replace", () => {
    const run = cli.commands.find((c) => c.name === "vm run")!;
    const flags = run.options.map((o) => o.rawName);
    for (const f of ["--no-workspace", "--cwd <dir>", "--keep", "--replace", "--from <path>"]) expect(flags).toContain(f);
    const parsed = cli.parse(["banger", "banger", "vm run", "--no-workspace", "--cwd", "sub", "--", "pwd"], { run: false });
    expect(parsed.options).toMatchObject({ workspace: false, cwd: "sub" });
  });

  test("completion scripts name the commands for every shell", () => {
    for (const shell of ["bash", "zsh", "fish"]) {
      const s = completionScript(cli, shell);
      expect(s).toContain("workspace");
      expect(s).toContain("ssh-config");
      expect(s).not.toContain("daemon run");
    }
  });
});
