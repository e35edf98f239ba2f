import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostRunner } from "../host/runner.ts";
import { RecordingRunner } from "../testing/recording-runner.ts";
import { agentVersionOf, buildImage, inTreeNamespace, IMAGE_PACKAGES, mmdebstrapArgv, parseDpkgStatus, resolveMode } from "./build.ts";
import { AGENT_UNIT, glueBootArgs, glueEntries, INIT_SCRIPT, SSHD_DROP_IN } from "./glue/index.ts";

const dir = mkdtempSync(join(tmpdir(), "banger-build-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("image build plan", () => {
  test("mode auto is root for root, rootless unshare otherwise", () => {
    expect(resolveMode("auto", 0)).toBe("root");
    expect(resolveMode("auto", 1000)).toBe("unshare");
    expect(inTreeNamespace("root", ["du"])).toEqual(["du"]);
    expect(inTreeNamespace("unshare", ["du"])).toEqual(["mmdebstrap", "--unshare-helper", "du"]);
  });

  test("mmdebstrap argv: minbase, packages, glue tarball, no baked host keys", () => {
    const argv = mmdebstrapArgv({ suite: "bookworm", mode: "unshare", rootDir: "/t/tree", glueTar: "/t/glue.tar", packages: IMAGE_PACKAGES });
    expect(argv.slice(0, 4)).toEqual(["mmdebstrap", "--variant=minbase", "--mode=unshare", "--format=directory"]);
    expect(argv).toContain("--include=openssh-server,systemd-sysv,udev,dbus,iproute2,git,ca-certificates,sudo,curl,python3,openssl,procps");
    expect(argv).toContain("--customize-hook=tar-in /t/glue.tar /");
    expect(argv).toContain('--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*');
    expect(argv.slice(-2)).toEqual(["bookworm", "/t/tree"]);
  });

  test("parseDpkgStatus lists installed packages only", () => {
    const status =
      "Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\n\nPackage: c\nStatus: install ok installed\nVersion: 3:1.0\n";
    expect(parseDpkgStatus(status)).toEqual(["a=1", "c=3:1.0"]);
  });

  test("agent version: --version output, else a content hash", async () => {
    const good = join(dir, "good");
    writeFileSync(good, "#!/bin/sh\necho 1.2.3\n", { mode: 0o755 });
    const bad = join(dir, "bad");
    writeFileSync(bad, "#!/bin/sh\nexit 3\n", { mode: 0o755 });
    expect(await agentVersionOf(good, hostRunner)).toBe("1.2.3");
    expect(await agentVersionOf(bad, hostRunner)).toMatch(/^sha256-[0-9a-f]{12}$/);
  });

  test("preflight refuses bad names, existing output and missing tools; a failed build leaves nothing", async () => {
    const agent = join(dir, "good");
    const deps = { runner: new RecordingRunner(), uid: 0, which: () => "/usr/bin/x" };
    await expect(buildImage({ name: "Bad Name", outDir: join(dir, "x"), agentBinary: agent }, deps)).rejects.toMatchObject({ code: "invalid_argument" });
    await expect(buildImage({ name: "ok", outDir: dir, agentBinary: agent }, deps)).rejects.toMatchObject({ code: "already_exists" });
    await expect(buildImage({ name: "ok", outDir: join(dir, "p"), agentBinary: agent, extraPackages: ["nodejs", "rm -rf /"] }, deps)).rejects.toThrow(
      'not a Debian package name: "rm -rf /"',
    );
    await expect(buildImage({ name: "ok", outDir: join(dir, "y"), agentBinary: agent }, { ...deps, which: () => null })).rejects.toMatchObject({
      code: "not_available",
    });
    const failing = new RecordingRunner((argv) => (argv[0] === "mmdebstrap" ? { code: 1, stderr: "E: no network" } : undefined));
    await expect(buildImage({ name: "ok", outDir: join(dir, "z"), agentBinary: agent }, { ...deps, runner: failing })).rejects.toThrow(/no network/);
    expect(readdirSync(dir).filter((n) => n.startsWith("z"))).toEqual([]);
  });
});

describe("boot glue", () => {
  test("the sshd drop-in holds exactly banger's directives", () => {
    const directives = SSHD_DROP_IN.split("\n").filter((l) => l && !l.startsWith("#"));
    expect(directives).toEqual([
      "PermitRootLogin prohibit-password",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "AuthorizedKeysFile /root/.ssh/authorized_keys",
      "StrictModes yes",
    ]);
    expect(SSHD_DROP_IN).not.toMatch(/LogLevel|StrictModes no|PermitRootLogin yes/);
  });

  test("init.sh is valid POSIX sh and logs with the banger-init: prefix", async () => {
    const f = join(dir, "init.sh");
    writeFileSync(f, INIT_SCRIPT);
    expect((await hostRunner.run(["sh", "-n", f], { allowFailure: true })).code).toBe(0);
    expect(INIT_SCRIPT).toContain('echo "banger-init: $*"');
    expect(INIT_SCRIPT).toContain('exec switch_root "$NEWROOT" /sbin/init');
  });

  test("agent unit restarts forever and starts before ssh", () => {
    expect(AGENT_UNIT).toContain("ExecStart=/usr/local/bin/banger-agent --auto");
    expect(AGENT_UNIT).toContain("Restart=always");
    expect(AGENT_UNIT).toContain("RestartSec=1");
    expect(AGENT_UNIT).toMatch(/Before=ssh\.service/);
    expect(AGENT_UNIT).toContain("StartLimitIntervalSec=0");
  });

  test("glue entries and boot args", () => {
    const paths = glueEntries({ binary: new Blob(["x"]), version: "1" }).map((e) => e.path);
    expect(paths).toContain("/usr/lib/banger/init");
    expect(paths).toContain("/usr/lib/banger/root");
    expect(paths).toContain("/usr/local/bin/banger-agent");
    expect(glueBootArgs({ guestIp: "172.30.0.2", gatewayIp: "172.30.0.1", netmask: "255.255.255.0", hostname: "web" })).toBe(
      "init=/usr/lib/banger/init ip=172.30.0.2::172.30.0.1:255.255.255.0:web:eth0:off",
    );
  });
});
