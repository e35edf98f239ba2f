import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hasBin, testNeeds } from "../testing/skip.ts";
import { checkSshInfo, guestAddressInSubnet, type SshInfo, systemSshArgv } from "./ssh-info.ts";

const SUBNET = "172.30.0.1/24";
const good: SshInfo = {
  name: "web",
  state: "running",
  ip: "172.30.0.5",
  user: "root",
  key: "/home/ada/.local/state/banger/ssh/id_ed25519",
  host_key: "ssh-ed25519 AAAA",
};
const root = mkdtempSync(join(tmpdir(), "banger-sshinfo-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The error checkSshInfo throws for one changed field. */
function refusal(change: Partial<Record<keyof SshInfo, unknown>>): { code?: string; message: string } {
  try {
    checkSshInfo({ ...good, ...change } as SshInfo, SUBNET);
  } catch (err) {
    return err as { code?: string; message: string };
  }
  throw new Error(`accepted ${JSON.stringify(change)}`);
}

describe("the daemon's ssh details are checked before use", () => {
  test("a well-formed answer passes unchanged", () => {
    expect(checkSshInfo(good, SUBNET)).toEqual(good);
  });

  test("a user that is an ssh option (ProxyCommand) or not a plain login name is refused", () => {
    for (const user of ["-oProxyCommand=touch /tmp/pwned", "-oProxyCommand=sh", "root@evil", "a b", "", "ROOT", 7]) {
      const e = refusal({ user });
      expect(e.code).toBe("permission_denied");
      expect(e.message).toContain("user");
    }
  });

  test("an address outside banger's subnet, the gateway, network or broadcast address is refused", () => {
    for (const ip of ["10.0.0.5", "172.30.1.5", "172.30.0.1", "172.30.0.0", "172.30.0.255", "-oProxyCommand=x", "::1", "172.30.0.5 -v"]) {
      expect(refusal({ ip }).message).toContain("address");
    }
    expect(guestAddressInSubnet("172.30.0.254", SUBNET)).toBe(true);
  });

  test("a name or key path that could smuggle options is refused", () => {
    expect(refusal({ name: "web ProxyCommand=x" }).message).toContain("name");
    expect(refusal({ key: "-oProxyCommand=x" }).message).toContain("key path");
    expect(refusal({ key: "/k\nProxyCommand x" }).message).toContain("key path");
  });

  test("the ssh argv ends options with -- before the destination and turns off every forwarding", () => {
    const argv = systemSshArgv(good, "/s/known_hosts", "uname -a", false);
    const dd = argv.indexOf("--");
    expect(argv.slice(dd)).toEqual(["--", "root@172.30.0.5", "uname -a"]);
    for (const o of ["ForwardAgent=no", "ForwardX11=no", "ClearAllForwardings=yes", "PermitLocalCommand=no"]) {
      expect(argv.indexOf(o)).toBeGreaterThan(0);
      expect(argv.indexOf(o)).toBeLessThan(dd);
      expect(argv[argv.indexOf(o) - 1]).toBe("-o");
    }
  });

  testNeeds("with the real ssh, the -o options win over a user config that forwards the agent, X11 and ports", [[hasBin("ssh"), "needs ssh"]], () => {
    const cfg = join(root, "config");
    writeFileSync(
      cfg,
      "Host *\n  ForwardAgent yes\n  ForwardX11 yes\n  ClearAllForwardings no\n  PermitLocalCommand yes\n  LocalCommand touch /tmp/never\n  RemoteForward 9000 localhost:22\n",
    );
    const r = Bun.spawnSync(["ssh", "-F", cfg, "-G", ...systemSshArgv(good, "/s/known_hosts", null, false)]);
    expect(r.exitCode).toBe(0);
    const g = r.stdout.toString();
    expect(g).toContain("\nforwardagent no\n");
    expect(g).toContain("\nforwardx11 no\n");
    expect(g).toContain("\nclearallforwardings yes\n");
    expect(g).toContain("\npermitlocalcommand no\n");
    expect(g).toContain("\nuser root\n");
    expect(g).toContain("\nhostname 172.30.0.5\n");
  });
});
