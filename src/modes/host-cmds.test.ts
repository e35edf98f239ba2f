import { describe, expect, test } from "bun:test";
import { invoker } from "./host-cmds.ts";

const homes: Record<string, string> = { root: "/root", ada: "/home/ada" };
const homeOf = (u: string) => homes[u] ?? null;

describe("invoker: whose TAPs and whose config host setup uses", () => {
  test("under sudo, which reset HOME to root's: the sudo user's uid, gid and config", () => {
    const who = invoker({ HOME: "/root", SUDO_USER: "ada", SUDO_UID: "1000", SUDO_GID: "1001" }, undefined, homeOf);
    expect({ uid: who.uid, gid: who.gid }).toEqual({ uid: 1000, gid: 1001 });
    expect(who.paths.configFile).toBe("/home/ada/.config/banger/config.toml");
  });

  test("under sudo with a HOME or XDG_CONFIG_HOME kept on purpose, those stand", () => {
    expect(invoker({ HOME: "/tmp/test-home", SUDO_USER: "ada", SUDO_UID: "1000", SUDO_GID: "1000" }, undefined, homeOf).paths.configFile).toBe("/tmp/test-home/.config/banger/config.toml");
    expect(invoker({ HOME: "/root", XDG_CONFIG_HOME: "/srv/cfg", SUDO_USER: "ada", SUDO_UID: "1000" }, undefined, homeOf).paths.configFile).toBe("/srv/cfg/banger/config.toml");
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
