// After one `host setup` as root, an unprivileged user runs the whole VM lifecycle on a real
// QEMU guest: the daemon, QEMU and every CLI call run as that user. The test makes a system
// user of its own and removes it afterwards, with everything else it made.
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { bangerBin, type CliResult, TestHome } from "../../src/testing/cli.ts";
import { privateNet } from "../../src/testing/fake-env.ts";
import { fixtureKernel, realGuestChecks, registerGolden } from "../../src/testing/real-env.ts";
import { hasBin, testNeeds } from "../../src/testing/skip.ts";
import { helperPath, sudoersPath } from "../../src/host/network/net-helper.ts";
import { existsSync } from "node:fs";

const needs = [
  ...realGuestChecks(),
  [hasBin("useradd") && hasBin("userdel") && hasBin("setpriv") && hasBin("sudo"), "needs useradd, userdel, setpriv and sudo"] as [boolean, string],
];
const ready = needs.every(([ok]) => ok);
const user = `bgu${Math.random().toString(36).slice(2, 7)}`;
let uid = 0;
let gid = 0;
let tunMode = 0;
let bridge = "";
let subnet = "";
const h = new TestHome();

const run = (argv: string[]) => {
  const r = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
};

/** A banger call as the unprivileged user. */
async function asUser(args: string[]): Promise<CliResult> {
  const p = Bun.spawn(["setpriv", `--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", bangerBin, ...args], {
    env: h.env,
    cwd: h.root,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

async function ok(args: string[]): Promise<string> {
  const r = await asUser(args);
  if (r.code !== 0) throw new Error(`banger ${args.join(" ")} as ${user}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

const uidOf = (pid: number) => Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);

beforeAll(async () => {
  if (!ready) return;
  run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", user]);
  uid = Number(run(["id", "-u", user]));
  gid = Number(run(["id", "-g", user]));
  ({ bridge, subnet } = privateNet());
  writeFileSync(
    h.paths.configFile,
    `vmm = "qemu"\nbridge = "${bridge}"\nsubnet = "${subnet}"\ntap_pool = 2\ndns_listen = "127.0.0.1:${20000 + Math.floor(Math.random() * 20000)}"\nstop_grace = "20s"\n`,
  );
  const setup = await h.run(["host", "setup", "--owner", `${uid}:${gid}`]);
  if (setup.code !== 0) throw new Error(`host setup: ${setup.stderr}`);
  // Most distributions ship /dev/net/tun as 0666; some machines (this kind among them) do not.
  tunMode = statSync("/dev/net/tun").mode & 0o777;
  chmodSync("/dev/net/tun", tunMode | 0o666);
  run(["chown", "-R", `${uid}:${gid}`, h.root]);
  await ok(["kernel", "import", fixtureKernel, "--name", "default"]);
  await registerGolden(h);
  run(["chown", "-R", `${uid}:${gid}`, h.root]);
}, 900_000);

afterAll(async () => {
  if (!uid) return void (await h.cleanup());
  await asUser(["vm", "delete", "--force", "u1"]);
  await asUser(["daemon", "stop"]);
  await h.run(["host", "teardown"]);
  expect(existsSync(sudoersPath(bridge)) || existsSync(helperPath(bridge))).toBe(false);
  await h.cleanup();
  if (tunMode) chmodSync("/dev/net/tun", tunMode);
  Bun.spawnSync(["pkill", "-KILL", "-u", String(uid)]);
  Bun.spawnSync(["userdel", user]);
});

describe("an unprivileged user after host setup (real guest)", () => {
  testNeeds(
    "create, ssh, stop/start keeping /root, delete: all as the user, with no root",
    needs,
    async () => {
      await ok(["vm", "create", "--name", "u1"]);
      const vm = JSON.parse(await ok(["vm", "show", "u1", "--json"])) as { pid: number };
      expect(uidOf(vm.pid)).toBe(uid);
      expect(uidOf(Number(readFileSync(h.paths.daemonPidFile, "utf8")))).toBe(uid);
      expect(await ok(["vm", "ssh", "u1", "--", "sh", "-c", "echo kept > /root/data && uname -r"])).toContain("6.1.192");
      expect(await ok(["vm", "stop", "u1"])).toContain("stopped");
      await ok(["vm", "start", "u1"]);
      expect((await ok(["vm", "ssh", "u1", "--", "cat", "/root/data"])).trim()).toBe("kept");
      expect(await ok(["vm", "ports", "u1"])).toMatch(/tcp\s+u1\.vm:22\s+sshd/);
      // Per-VM rules go through the one root-owned helper sudo allows; sudo allows nothing else.
      expect(await ok(["vm", "set", "u1", "--nat"])).toContain("net nat");
      expect(Bun.spawnSync(["nft", "list", "set", "inet", `banger_${bridge}`, "nat_guests"]).stdout.toString()).toContain(
        JSON.parse(await ok(["vm", "show", "u1", "--json"])).ip,
      );
      expect(await ok(["vm", "set", "u1", "--net", "none"])).toContain("net none");
      const direct = Bun.spawnSync(["setpriv", `--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", "sudo", "-n", "nft", "list", "ruleset"], {
        stderr: "pipe",
      });
      expect(direct.exitCode).not.toBe(0);
      const forged = Bun.spawnSync(
        ["setpriv", `--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", "sudo", "-n", helperPath(bridge), "net-apply", "banger0"],
        { stderr: "pipe" },
      );
      expect(forged.exitCode).not.toBe(0);
      expect(await ok(["vm", "delete", "--force", "u1"])).toContain("deleted");
      expect(JSON.parse(await ok(["vm", "list", "--json"]))).toEqual([]);
    },
    300_000,
  );
});
