import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostRunner } from "../host/runner.ts";
import { hasBin, testNeeds } from "../testing/skip.ts";
import { buildConfigDrive, guestPathUnderRoot, renderEnv, type ConfigDriveSpec } from "./config-drive.ts";

const dir = mkdtempSync(join(tmpdir(), "banger-cfgdrive-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const debugfs = async (img: string, cmd: string) => (await hostRunner.run(["debugfs", "-R", cmd, img])).stdout;
const modeOf = async (img: string, p: string) => /Mode:\s+(\d+)/.exec(await debugfs(img, `stat ${p}`))?.[1];

function spec(over: Partial<ConfigDriveSpec> = {}): ConfigDriveSpec {
  return {
    hostname: "web",
    authorizedKeys: ["ssh-ed25519 AAAA user@host"],
    hostKey: { private: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----", public: "ssh-ed25519 BBBB root@web" },
    resolvConf: "nameserver 172.30.0.1",
    files: [],
    env: {},
    ...over,
  };
}

describe("config drive helpers", () => {
  test("guest paths must stay under /root", () => {
    expect(guestPathUnderRoot("~/.aws")).toBe("/root/.aws");
    expect(guestPathUnderRoot("/root/bin/x/")).toBe("/root/bin/x");
    for (const bad of ["/etc/passwd", "~/../etc", "/root/", "relative", "/root/a\nb", "/rootx/y"]) {
      expect(() => guestPathUnderRoot(bad)).toThrow(/must be under/);
    }
  });

  test("env renders as sourceable shell", () => {
    expect(renderEnv({ A: "x y", B: "it's" })).toBe("A='x y'\nB='it'\\''s'\n");
    expect(() => renderEnv({ "A-B": "x" })).toThrow(/invalid/);
  });
});

describe("buildConfigDrive", () => {
  testNeeds("writes the documented layout into a small ext4", [[hasBin("mkfs.ext4") && hasBin("debugfs"), "e2fsprogs missing"]], async () => {
    const host = join(dir, "host");
    mkdirSync(join(host, "aws", "sub"), { recursive: true });
    writeFileSync(join(host, "aws", "credentials"), "secret");
    chmodSync(join(host, "aws", "credentials"), 0o640);
    writeFileSync(join(host, "aws", "sub", "run.sh"), "#!/bin/sh\n");
    chmodSync(join(host, "aws", "sub", "run.sh"), 0o755);
    writeFileSync(join(host, "tool"), "bin");
    const agent = join(host, "agent");
    writeFileSync(agent, "AGENT");
    const img = join(dir, "vm", "config.ext4");
    const t0 = performance.now();
    const r = await buildConfigDrive(
      img,
      spec({
        gitconfig: "[user]\n\tname = A\n",
        env: { BANGER_VM: "web" },
        agent: { version: "0.2.0", binaryPath: agent },
        files: [
          { guestPath: "~/.aws", hostPath: join(host, "aws") },
          { guestPath: "/root/bin/tool", hostPath: join(host, "tool"), mode: 0o755 },
          { guestPath: "~/note with space", content: "hi" },
          { guestPath: "~/gone", hostPath: join(host, "missing") },
        ],
      }),
      { runner: hostRunner },
    );
    console.log(`config drive: ${r.sizeBytes / 1024 / 1024} MiB in ${(performance.now() - t0).toFixed(0)} ms`);
    expect(r.skipped).toEqual([join(host, "missing")]);
    expect(statSync(img).size).toBe(r.sizeBytes);
    expect(statSync(img).mode & 0o777).toBe(0o600);
    expect(r.sizeBytes).toBeLessThanOrEqual(8 * 1024 * 1024);
    expect(await debugfs(img, "cat /hostname")).toBe("web\n");
    expect(await debugfs(img, "cat /format")).toBe("1\n");
    expect(await debugfs(img, "cat /resolv.conf")).toBe("nameserver 172.30.0.1\n");
    expect(await debugfs(img, "cat /authorized_keys")).toBe("ssh-ed25519 AAAA user@host\n");
    expect(await debugfs(img, "cat /ssh_host_ed25519_key.pub")).toBe("ssh-ed25519 BBBB root@web\n");
    expect(await modeOf(img, "/ssh_host_ed25519_key")).toBe("0600");
    expect(await debugfs(img, "cat /env")).toBe("BANGER_VM='web'\n");
    expect(await debugfs(img, "cat /agent/version")).toBe("0.2.0\n");
    expect(await debugfs(img, "cat /files/manifest")).toBe("0 d 0700 /root/.aws\n1 f 0755 /root/bin/tool\n2 f 0600 /root/note with space\n");
    expect(await debugfs(img, "cat /files/0/credentials")).toBe("secret");
    expect(await modeOf(img, "/files/0/credentials")).toBe("0640");
    expect(await modeOf(img, "/files/0/sub/run.sh")).toBe("0755");
    expect(await debugfs(img, "cat /files/2")).toBe("hi");
    expect(readdirSync(join(dir, "vm"))).toEqual(["config.ext4"]); // no stage or temp left

    // rebuilt at every start: a second build replaces the first
    await buildConfigDrive(img, spec({ hostname: "web2" }), { runner: hostRunner });
    expect(await debugfs(img, "cat /hostname")).toBe("web2\n");
    expect(await debugfs(img, "cat /files/manifest")).toBe("");
  });

  test("a bad hostname or guest path fails before anything is written", async () => {
    const img = join(dir, "bad", "config.ext4");
    await expect(buildConfigDrive(img, spec({ hostname: "no_underscores" }), { runner: hostRunner })).rejects.toMatchObject({ code: "invalid_argument" });
    await expect(buildConfigDrive(img, spec({ files: [{ guestPath: "/etc/x", content: "" }] }), { runner: hostRunner })).rejects.toMatchObject({
      code: "invalid_argument",
    });
    expect(existsSync(img)).toBe(false);
    expect(readdirSync(join(dir, "bad"))).toEqual([]);
  });
});
