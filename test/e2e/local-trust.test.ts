// Another local user cannot answer as the daemon: the compiled CLI refuses a runtime dir that is
// someone else's or a symlink without connecting to the socket in it, and refuses ssh details
// from a daemon that would put an option on ssh's command line. No guest is booted.
import { afterAll, describe, expect } from "bun:test";
import { chownSync, existsSync, mkdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { bangerBin, daemonPids, TestHome } from "../../src/testing/cli.ts";
import { hasBin, isRoot, testNeeds } from "../../src/testing/skip.ts";
import { isAlive } from "../../src/vm/drivers/process.ts";

const built: Array<[boolean, string]> = [[existsSync(bangerBin), "dist/banger not built (bun run build)"]];
const NOBODY = 65534;
const homes: TestHome[] = [];
const servers: Array<{ close(): void }> = [];
afterAll(async () => {
  for (const s of servers) s.close();
  for (const h of homes) await h.cleanup();
});

function home(extra: Record<string, string> = {}): TestHome {
  const h = new TestHome(extra);
  homes.push(h);
  return h;
}

/** A socket that only counts who connects: a planted fake daemon. */
async function recorder(path: string): Promise<() => number> {
  let n = 0;
  const s: Server = createServer((c) => {
    n++;
    c.destroy();
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(path, () => r()));
  return () => n;
}

describe("a runtime dir banger cannot trust is refused before any connection", () => {
  testNeeds(
    "another user's runtime dir (chowned to nobody) with a live socket: refused naming the dir and the fix; nothing connects, no daemon starts",
    [...built, [isRoot, "needs root to chown to nobody"]],
    async () => {
      const h = home();
      mkdirSync(h.paths.runtimeDir, { mode: 0o700 });
      const connections = await recorder(h.paths.socket);
      chownSync(h.paths.socket, NOBODY, NOBODY);
      chownSync(h.paths.runtimeDir, NOBODY, NOBODY);
      for (const args of [
        ["vm", "list"],
        ["daemon", "status"],
        ["daemon", "stop"],
      ]) {
        const r = await h.run(args);
        expect(r.code).not.toBe(0);
        expect(r.stderr).toContain(`banger's runtime directory ${h.paths.runtimeDir} is owned by uid ${NOBODY}, not by you`);
        expect(r.stderr).toContain("XDG_RUNTIME_DIR");
        expect(r.stderr).toContain(`rm -r ${h.paths.runtimeDir}`);
      }
      const doctor = JSON.parse((await h.run(["doctor", "--json"])).stdout) as {
        checks: Array<{ name: string; status: string; detail: string; fix?: string }>;
      };
      expect(doctor.checks.find((c) => c.name === "runtime dir")).toMatchObject({ status: "fail" });
      expect(connections()).toBe(0);
      expect(daemonPids(h.paths.socket)).toEqual([]);
    },
  );

  testNeeds("a runtime dir that is a symlink (to a dir with a live socket) is refused; nothing connects", built, async () => {
    const h = home();
    const elsewhere = join(h.root, "elsewhere");
    mkdirSync(elsewhere, { mode: 0o700 });
    const connections = await recorder(join(elsewhere, "banger.sock"));
    symlinkSync(elsewhere, h.paths.runtimeDir);
    const r = await h.run(["vm", "list"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`banger's runtime directory ${h.paths.runtimeDir} is a symbolic link`);
    expect(connections()).toBe(0);
    expect(daemonPids(h.paths.socket)).toEqual([]);
  });

  testNeeds("without XDG_RUNTIME_DIR the daemon's socket is under the user's state dir, in a 0700 dir", built, async () => {
    const h = home({ XDG_RUNTIME_DIR: "" });
    expect(h.paths.runtimeDir).toBe(join(h.paths.stateDir, "run"));
    const r = await h.run(["daemon", "status", "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).socket).toBe(join(h.paths.stateDir, "run", "banger.sock"));
    expect(statSync(h.paths.runtimeDir).mode & 0o777).toBe(0o700);
    expect((await h.run(["daemon", "stop"])).code).toBe(0);
  });
});

/** A fake daemon of this build on the home's (trusted) socket, answering ssh-info with `info`. */
async function fakeDaemon(h: TestHome, info: Record<string, unknown>, pid: number) {
  const buildId = JSON.parse((await h.run(["version", "--json"])).stdout).buildId as string;
  mkdirSync(h.paths.runtimeDir, { mode: 0o700 });
  const methods: string[] = [];
  const status = {
    pid,
    version: "x",
    buildId,
    startedAt: new Date().toISOString(),
    uptimeS: 1,
    busy: 0,
    socket: h.paths.socket,
    log: h.paths.daemonLog,
    vms: 1,
    dns: "",
  };
  const server = Bun.serve({
    unix: h.paths.socket,
    fetch: async (req) => {
      const { method } = (await req.json()) as { method: string };
      methods.push(method);
      const result = method === "daemon.status" ? status : method === "vm.ssh-info" ? info : method === "daemon.stop" ? { stopping: true } : null;
      return Response.json(result ? { ok: true, result } : { ok: false, error: { code: "not_found", message: "no" } });
    },
  });
  servers.push({ close: () => server.stop(true) });
  return methods;
}

describe("a daemon's answers are checked before they reach a command line", () => {
  testNeeds(
    "ssh-info with -oProxyCommand=… as the user, or an address outside the subnet: vm ssh, ssh-config proxy and workspace prepare refuse; nothing runs",
    built,
    async () => {
      const h = home();
      const marker = join(h.root, "pwned");
      const evil = {
        name: "web",
        state: "running",
        ip: "172.30.0.5",
        user: `-oProxyCommand=touch ${marker}`,
        key: "/nonexistent/key",
        host_key: "ssh-ed25519 AAAA",
      };
      const methods = await fakeDaemon(h, evil, process.pid);
      for (const args of [
        ["vm", "ssh", "web", "true"],
        ["ssh-config", "proxy", "web.vm", "22"],
        ["vm", "workspace", "prepare", "web"],
      ]) {
        const r = await h.run(args);
        expect(r.code).not.toBe(0);
        expect(r.stderr).toContain("the daemon's ssh details for this VM are not safe to use: user");
      }
      expect(existsSync(marker)).toBe(false);
      expect(methods.filter((m) => m === "vm.ssh-info").length).toBe(3);
      // The same with a plain user but the host's own address: refused before any connection.
      evil.user = "root";
      evil.ip = "127.0.0.1";
      const r = await h.run(["vm", "workspace", "prepare", "web"]);
      expect(r.stderr).toContain("address (not a guest address of 172.30.0.1/24)");
    },
  );

  testNeeds(
    "daemon stop never kills a pid that is not our daemon, whatever the answer names",
    built,
    async () => {
      const h = home();
      const bystander = Bun.spawn(["sleep", "120"], { stdout: "ignore", stderr: "ignore" });
      try {
        const methods = await fakeDaemon(h, {}, bystander.pid);
        const r = await h.run(["daemon", "stop"]);
        expect(methods).toContain("daemon.stop");
        expect(r.code).toBe(1);
        expect(r.stderr).toContain(`pid ${bystander.pid}, which is not a banger daemon of yours; it was left alone`);
        expect(isAlive(bystander.pid)).toBe(true);
      } finally {
        bystander.kill("SIGKILL");
      }
    },
    60_000,
  );
});

describe("ssh through banger leaks nothing of the user's", () => {
  testNeeds(
    "after ssh-config install, ssh -G web.vm shows no agent, X11 or port forwarding although ~/.ssh/config asks for them",
    [...built, [hasBin("ssh"), "needs ssh"]],
    async () => {
      const h = home();
      const cfg = join(h.env.HOME!, ".ssh", "config");
      mkdirSync(join(h.env.HOME!, ".ssh"), { recursive: true, mode: 0o700 });
      writeFileSync(
        cfg,
        "Host *\n  ForwardAgent yes\n  ForwardX11 yes\n  ClearAllForwardings no\n  PermitLocalCommand yes\n  LocalCommand touch /tmp/never\n  DynamicForward 1080\n",
      );
      expect((await h.run(["ssh-config", "install"])).code).toBe(0);
      const g = Bun.spawnSync(["ssh", "-F", cfg, "-G", "web.vm"]).stdout.toString();
      for (const line of ["forwardagent no", "forwardx11 no", "clearallforwardings yes", "permitlocalcommand no"]) expect(g).toContain(`\n${line}\n`);
      expect(Bun.spawnSync(["ssh", "-F", cfg, "-G", "example.org"]).stdout.toString()).toContain("\nforwardagent yes\n");
    },
  );
});

describe("a second user on the same host", () => {
  testNeeds(
    "gets a working daemon when the first one holds dns_listen (real second user: nobody); status says DNS is not served",
    [...built, [isRoot && hasBin("setpriv"), "needs root and setpriv"]],
    async () => {
      const port = 20000 + Math.floor(Math.random() * 20000);
      const first = home();
      writeFileSync(first.paths.configFile, `dns_listen = "127.0.0.1:${port}"\n`);
      const second = home({ XDG_RUNTIME_DIR: "" });
      writeFileSync(second.paths.configFile, `dns_listen = "127.0.0.1:${port}"\n`);
      chownRecursive(second.root, NOBODY);
      const a = await first.run(["daemon", "status", "--json"]);
      expect(JSON.parse(a.stdout).dns).toBe(`127.0.0.1:${port}`);
      const asNobody = (args: string[]) => runAs(NOBODY, second, args);
      const b = await asNobody(["daemon", "status"]);
      expect(b.code).toBe(0);
      expect(b.stdout).toContain(`socket: ${join(second.paths.stateDir, "run", "banger.sock")}`);
      expect(b.stdout).toContain(`dns: not listening: DNS address 127.0.0.1:${port} is already in use`);
      expect((await asNobody(["vm", "list"])).code).toBe(0);
      expect((await asNobody(["daemon", "stop"])).code).toBe(0);
      expect((await first.run(["daemon", "stop"])).code).toBe(0);
    },
    60_000,
  );
});

/** `banger args…` with that home, as another user. */
async function runAs(uid: number, h: TestHome, args: string[]) {
  const p = Bun.spawn(["setpriv", `--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", bangerBin, ...args], {
    env: h.env,
    cwd: h.root,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

function chownRecursive(dir: string, uid: number) {
  Bun.spawnSync(["chown", "-R", `${uid}:${uid}`, dir]);
}
