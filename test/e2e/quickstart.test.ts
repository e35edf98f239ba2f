import { afterAll, expect } from "bun:test";
import { openStoreReadOnly } from "../../src/store/db.ts";
import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { bangerBin, TestHome } from "../../src/testing/cli.ts";
import { privateNet } from "../../src/testing/fake-env.ts";
import { fixtureKernel, realGuestChecks } from "../../src/testing/real-env.ts";
import { hasBin, projectRoot, testNeeds } from "../../src/testing/skip.ts";
import { isAlive } from "../../src/vm/drivers/process.ts";

const needs = realGuestChecks();
const h = new TestHome();
const { bridge, subnet } = privateNet();
afterAll(async () => {
  await h.run(["vm", "delete", "--force", "quickstart", "np"]);
  await h.run(["host", "teardown"]);
  await h.cleanup();
});

const git = (cwd: string, ...args: string[]) => {
  const r = Bun.spawnSync(["git", ...args], { cwd, env: { ...process.env, ...h.env } });
  if (r.exitCode !== 0) throw new Error(`git ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.toString().trim();
};

testNeeds(
  "the newcomer's path: quickstart, vm run in a repo, commit in the guest, export, ports, stop/start, delete leaves nothing (real guest)",
  needs,
  async () => {
    writeFileSync(h.paths.configFile, `bridge = "${bridge}"\nsubnet = "${subnet}"\ntap_pool = 4\ndns_listen = "127.0.0.1:0"\n`);
    writeFileSync(join(h.env.HOME!, ".gitconfig"), "[user]\n\tname = New Comer\n\temail = new@example.com\n");
    const started = performance.now();
    const quick = Bun.spawn(["bash", join(projectRoot, "scripts/quickstart.sh"), "--kernel", fixtureKernel, "--", "uname", "-a"], {
      env: { ...process.env, ...h.env },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, err, code] = await Promise.all([new Response(quick.stdout).text(), new Response(quick.stderr).text(), quick.exited]);
    console.log(`quickstart took ${Math.round((performance.now() - started) / 1000)} s`);
    if (code !== 0) console.log(out.slice(-3000), err.slice(-3000));
    expect(code).toBe(0);
    expect(out).toContain("6.1.192");
    const uname = await h.run(["vm", "ssh", "quickstart", "--", "uname", "-a"]);
    expect(uname.code).toBe(0);
    expect(uname.stdout).toMatch(/^Linux quickstart 6\.1\.192/);

    const repo = join(h.root, "project");
    Bun.spawnSync(["mkdir", "-p", repo]);
    git(repo, "init", "-q", "-b", "main");
    writeFileSync(join(repo, "README.md"), "# project\n");
    git(repo, "add", ".");
    git(repo, "commit", "-qm", "first");
    const run = await h.run(["vm", "run", "--name", "np"], { cwd: repo });
    expect(run.code).toBe(0);
    expect(run.stdout).toContain("banger vm workspace export np");
    const edit = await h.run([
      "vm",
      "ssh",
      "np",
      "--",
      "sh",
      "-c",
      "cd /root/repo && echo change >> README.md && git commit -qam 'guest edit' && echo data > /root/data.txt",
    ]);
    expect(edit.code).toBe(0);
    const head = git(repo, "rev-parse", "HEAD");
    const exp = await h.run(["vm", "workspace", "export", "np"], { cwd: repo });
    expect(exp.code).toBe(0);
    expect(git(repo, "log", "-1", "--format=%s", "banger/np")).toBe("guest edit");
    expect(git(repo, "rev-parse", "HEAD")).toBe(head);
    expect(git(repo, "status", "--porcelain")).toBe("");

    const ports = await h.run(["vm", "ports", "np"]);
    expect(ports.stdout).toMatch(/tcp\s+np\.vm:22\s+sshd/);
    expect((await h.run(["vm", "stop", "np"])).code).toBe(0);
    expect((await h.run(["vm", "start", "np"])).code).toBe(0);
    expect((await h.run(["vm", "ssh", "np", "--", "cat", "/root/data.txt"])).stdout.trim()).toBe("data");

    const vms = JSON.parse((await h.run(["vm", "list", "--json"])).stdout) as Array<{ pid: number }>;
    expect((await h.run(["vm", "delete", "--force", "np", "quickstart"])).code).toBe(0);
    for (const v of vms) expect(isAlive(v.pid)).toBe(false);
    expect(readdirSync(h.paths.vmsDir)).toEqual([]);
    const db = openStoreReadOnly(h.paths.dbFile)!;
    expect(db.query("SELECT count(*) AS n FROM vms").get()).toEqual({ n: 0 });
    db.close();
    expect((await h.run(["host", "teardown"])).code).toBe(0);
    expect(Bun.spawnSync(["ip", "-br", "link"]).stdout.toString()).not.toContain(bridge);
    // iptables only where installed: banger writes nftables, and a fresh Debian has no iptables.
    const legacy = hasBin("iptables-save") ? Bun.spawnSync(["iptables-save"]).stdout.toString() : "";
    const rules = Bun.spawnSync(["nft", "list", "ruleset"]).stdout.toString() + legacy;
    expect(rules).not.toContain(bridge);
  },
  1_200_000,
);

void existsSync;
void bangerBin;
