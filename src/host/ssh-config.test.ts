import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hasBin, testNeeds } from "../testing/skip.ts";
import { resolvePaths } from "./paths.ts";
import { installInclude, uninstallInclude, writeSshConfig } from "./ssh-config.ts";

const root = mkdtempSync(join(tmpdir(), "banger-sshcfg-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const LEAKY =
  "Host *\n  ForwardAgent yes\n  ForwardX11 yes\n  ClearAllForwardings no\n  PermitLocalCommand yes\n  LocalCommand touch /tmp/never\n  RemoteForward 9000 localhost:22\n";

/** A home whose ~/.ssh/config forwards everything, with banger's block installed. */
function home(name: string, userConfig: string) {
  const paths = resolvePaths({ HOME: join(root, name), XDG_STATE_HOME: join(root, name, "state") });
  mkdirSync(join(paths.home, ".ssh"), { recursive: true });
  const cfg = join(paths.home, ".ssh", "config");
  writeFileSync(cfg, userConfig);
  writeSshConfig(paths, join(paths.sshDir, "id_ed25519"), ["/usr/local/bin/banger"]);
  return { paths, cfg };
}

/** `ssh -G host` through that config: the options ssh would really use. */
function effective(cfg: string, host: string): string {
  const r = Bun.spawnSync(["ssh", "-F", cfg, "-G", host]);
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  return r.stdout.toString();
}

describe("ssh-config install", () => {
  testNeeds("ssh -G web.vm through the installed Include shows no forwarding whatever the user's config says", [[hasBin("ssh"), "needs ssh"]], () => {
    const { paths, cfg } = home("a", LEAKY);
    expect(installInclude(paths)).toBe("installed");
    const g = effective(cfg, "web.vm");
    for (const line of ["forwardagent no", "forwardx11 no", "clearallforwardings yes", "permitlocalcommand no", "stricthostkeychecking true", "user root"])
      expect(g).toContain(`\n${line}\n`);
    // Other hosts keep the user's own settings.
    expect(effective(cfg, "example.org")).toContain("\nforwardagent yes\n");
  });

  test("the block goes at the top; one found lower down is moved up; uninstall leaves the user's lines", () => {
    const { paths, cfg } = home("b", LEAKY);
    expect(installInclude(paths)).toBe("installed");
    expect(installInclude(paths)).toBe("already installed");
    const installed = readFileSync(cfg, "utf8");
    expect(installed.startsWith("# >>> banger")).toBe(true);
    // The user (or an editor) put their own lines above it: reinstalling moves it back up.
    writeFileSync(cfg, `${LEAKY}${installed.slice(0, installed.indexOf(LEAKY))}`);
    expect(installInclude(paths)).toBe("moved to the top");
    expect(readFileSync(cfg, "utf8")).toBe(installed);
    expect(uninstallInclude(paths)).toBe("removed");
    expect(readFileSync(cfg, "utf8")).toBe(LEAKY);
  });
});
