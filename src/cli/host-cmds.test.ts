import { describe, expect, test } from "bun:test";
import { bootUnit, invoker } from "./host-cmds.ts";

const homes: Record<string, string> = { root: "/root", ada: "/home/ada" };
const homeOf = (u: string) => homes[u] ?? null;

describe("invoker: whose TAPs and whose config host setup uses", () => {
  test("under sudo, which reset HOME to root's: the sudo user's uid, gid and config", () => {
    const who = invoker({ HOME: "/root", SUDO_USER: "ada", SUDO_UID: "1000", SUDO_GID: "1001" }, undefined, homeOf);
    expect({ uid: who.uid, gid: who.gid }).toEqual({ uid: 1000, gid: 1001 });
    expect(who.paths.configFile).toBe("/home/ada/.config/banger/config.toml");
  });

  test("under sudo with a HOME or XDG_CONFIG_HOME kept on purpose, those stand", () => {
    expect(invoker({ HOME: "/tmp/test-home", SUDO_USER: "ada", SUDO_UID: "1000", SUDO_GID: "1000" }, undefined, homeOf).paths.configFile).toBe(
      "/tmp/test-home/.config/banger/config.toml",
    );
    expect(invoker({ HOME: "/root", XDG_CONFIG_HOME: "/srv/cfg", SUDO_USER: "ada", SUDO_UID: "1000" }, undefined, homeOf).paths.configFile).toBe(
      "/srv/cfg/banger/config.toml",
    );
  });

  test("--owner (the boot-time unit) wins, with the config from the environment it sets", () => {
    const who = invoker({ HOME: "/root", XDG_CONFIG_HOME: "/home/ada/.config" }, "1000:1000", homeOf);
    expect({ uid: who.uid, gid: who.gid, config: who.paths.configFile }).toEqual({ uid: 1000, gid: 1000, config: "/home/ada/.config/banger/config.toml" });
    expect(() => invoker({}, "ada", homeOf)).toThrow("expected UID:GID");
  });

  test("without sudo: the caller", () => {
    const who = invoker({ HOME: "/home/ada" }, undefined, homeOf);
    expect(who.uid).toBe(process.getuid!());
    expect(who.paths.configFile).toBe("/home/ada/.config/banger/config.toml");
  });
});

describe("the boot-time unit runs nothing the user can change", () => {
  test("it runs a root-owned copy of banger with a root-owned config snapshot, made at setup", () => {
    const who = invoker({ HOME: "/home/ada" }, "1000:1000", homeOf);
    const unit = bootUnit(who, "banger0", ["/home/ada/bin/banger"], true);
    expect(unit.exec).toEqual(["/usr/local/lib/banger/banger", "host", "setup", "--owner", "1000:1000"]);
    expect(unit.env).toEqual({ XDG_CONFIG_HOME: "/etc/banger/host-banger0" });
    expect(unit.copies).toEqual([
      { from: "/home/ada/bin/banger", to: "/usr/local/lib/banger/banger", mode: "0755", dirs: ["/usr/local/lib/banger"] },
      {
        from: "/home/ada/.config/banger/config.toml",
        to: "/etc/banger/host-banger0/banger/config.toml",
        mode: "0644",
        dirs: ["/etc/banger", "/etc/banger/host-banger0", "/etc/banger/host-banger0/banger"],
      },
    ]);
    for (const path of [...unit.exec, ...Object.values(unit.env!)]) expect(path.startsWith("/home/")).toBe(false);
    // Without a config file the snapshot is empty: defaults, as for the user.
    expect(bootUnit(who, "banger0", ["/x/banger"], false).copies![1]!.from).toBe("/dev/null");
  });
});
