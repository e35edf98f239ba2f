import { afterAll, beforeAll, describe, expect } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bangerBin } from "../../src/testing/cli.ts";
import { realGuestChecks, realHome, type RealHome } from "../../src/testing/real-env.ts";
import { testNeeds } from "../../src/testing/skip.ts";
import { makeBulkRepo } from "../../src/testing/testrepo.ts";

// `vm exec` and `vm cp` through the compiled CLI against one real QEMU guest (r1), shared
// by every check here to keep the file to one boot.
const needs = realGuestChecks();
const T = 300_000;
let h: RealHome;
const tmp = mkdtempSync(join(tmpdir(), "banger-execreal-"));

beforeAll(async () => {
  if (needs.some(([ok]) => !ok)) return;
  h = await realHome();
  const c = await h.run(["vm", "create", "--name", "r1"]);
  if (c.code !== 0) throw new Error(`vm create: ${c.stderr}`);
}, 900_000);

afterAll(async () => {
  if (h) {
    await h.run(["vm", "delete", "--force", "r1"]);
    await h.teardownNet();
    await h.cleanup();
  }
  rmSync(tmp, { recursive: true, force: true });
});

/** Runs a host shell pipeline with banger on PATH as `banger`, in the test's home. */
async function sh(script: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn(["bash", "-o", "pipefail", "-c", script], {
    env: { ...h.env, B: bangerBin },
    cwd: tmp,
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : 0;
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const v = await fn();
  return [v, performance.now() - t];
}

describe("vm exec on a real guest (needs qemu, root, built dist/)", () => {
  testNeeds(
    "exit codes, environment, cwd and user; stdout stays the command's",
    needs,
    async () => {
      const seven = await h.run(["vm", "exec", "r1", "--", "sh", "-c", "exit 7"]);
      expect(seven.code).toBe(7);
      const who = await h.run([
        "vm",
        "exec",
        "r1",
        "--env",
        "A=hello world",
        "--cwd",
        "/tmp",
        "--user",
        "nobody",
        "--",
        "sh",
        "-c",
        'echo "$A|$(pwd)|$(id -un)"; echo err >&2',
      ]);
      expect(who).toMatchObject({ code: 0, stdout: "hello world|/tmp|nobody\n", stderr: "err\n" });
      const missing = await h.run(["vm", "exec", "nosuchvm", "--", "true"]);
      expect(missing.code).not.toBe(0);
      expect(missing.stderr).toContain("nosuchvm");
      const [, execMs] = await timed(() => h.run(["vm", "exec", "r1", "--", "true"]));
      const [viaSsh, sshMs] = await timed(() => sh(`timeout 60 "$B" vm ssh r1 -- true`));
      console.log(
        `vm exec r1 -- true: ${execMs.toFixed(0)} ms; vm ssh r1 -- true: ${viaSsh.code === 0 ? `${sshMs.toFixed(0)} ms (${(execMs / sshMs).toFixed(2)}x)` : `failed (${viaSsh.code}), no ratio`}`,
      );
    },
    T,
  );

  testNeeds(
    "100 MB of stdin arrives byte for byte (sha256 matches the host's)",
    needs,
    async () => {
      const r = await sh(`head -c 100M /dev/urandom > in.bin && sha256sum < in.bin && "$B" vm exec r1 -- sha256sum < in.bin`);
      expect(r.code).toBe(0);
      const [host, guest] = r.stdout.trim().split("\n");
      expect(guest).toBe(host!);
      rmSync(join(tmp, "in.bin"), { force: true });
    },
    T,
  );

  testNeeds(
    "1 GiB from /dev/zero counts exactly and the daemon's RSS stays bounded",
    needs,
    async () => {
      const pid = h.daemonPid()!;
      const before = rssMiB(pid);
      let peak = before;
      const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(pid))), 100);
      const [r, ms] = await timed(() => sh(`"$B" vm exec r1 -- cat /dev/zero | head -c 1G | wc -c`));
      clearInterval(sampler);
      console.log(
        `1 GiB out of the guest in ${(ms / 1000).toFixed(1)} s (${(1024 / (ms / 1000)).toFixed(1)} MiB/s); daemon RSS ${before.toFixed(0)} MiB before, peak ${peak.toFixed(0)} MiB`,
      );
      expect(r.stdout.trim()).toBe(String(1024 ** 3));
      expect(peak - before).toBeLessThan(128);
    },
    900_000,
  );

  testNeeds(
    "--tty gives a /dev/pts terminal; an interrupt ends a remote sleep; 20 execs at once keep their own output",
    needs,
    async () => {
      const t = await h.run(["vm", "exec", "r1", "--tty", "--", "tty"]);
      expect(t.code).toBe(0);
      expect(t.stdout).toMatch(/\/dev\/pts\/\d+/);

      const proc = Bun.spawn([bangerBin, "vm", "exec", "r1", "--", "sleep", "300"], { env: h.env, stdout: "pipe", stderr: "pipe" });
      for (let i = 0; i < 100; i++) {
        const p = await h.run(["vm", "exec", "r1", "--", "pgrep", "-x", "sleep"]);
        if (p.code === 0) break;
        await Bun.sleep(100);
      }
      proc.kill("SIGINT");
      expect(await proc.exited).toBe(130);
      expect((await h.run(["vm", "exec", "r1", "--", "pgrep", "-x", "sleep"])).code).toBe(1);

      const many = await Promise.all(Array.from({ length: 20 }, (_, i) => h.run(["vm", "exec", "r1", "--", "sh", "-c", `echo out-${i}; echo err-${i} >&2`])));
      expect(many.map((m) => [m.code, m.stdout, m.stderr])).toEqual(Array.from({ length: 20 }, (_, i) => [0, `out-${i}\n`, `err-${i}\n`]));
    },
    T,
  );

  testNeeds(
    "vm cp -r of a directory with modes, a symlink and a 200 MB file, in and back out: identical",
    needs,
    async () => {
      const made = await sh(
        `mkdir -p src/sub && echo hi > src/a.txt && chmod 640 src/a.txt && printf '#!/bin/sh\n' > src/run.sh && chmod 755 src/run.sh && chmod 700 src/sub && echo deep > src/sub/d.txt && ln -s a.txt src/link && head -c 200M /dev/urandom > src/big.bin`,
      );
      expect(made.code).toBe(0);
      const LIST = `find . -printf '%p %m %y %l %s\n' | sort && sha256sum big.bin`;
      const host = (await sh(`cd src && ${LIST}`)).stdout;

      const refused = await h.run(["vm", "cp", join(tmp, "src"), "r1:/root/"]);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain("-r");

      const [cin, inMs] = await timed(() => h.run(["vm", "cp", "-r", join(tmp, "src"), "r1:/root/"]));
      expect(cin).toMatchObject({ code: 0, stderr: "" });
      const guest = await h.run(["vm", "exec", "r1", "--cwd", "/root/src", "--", "sh", "-c", LIST]);
      expect(guest.stdout).toBe(host);

      const [cout, outMs] = await timed(() => h.run(["vm", "cp", "-r", "r1:/root/src", join(tmp, "back")]));
      expect(cout.code).toBe(0);
      expect((await sh(`cd back && ${LIST}`)).stdout).toBe(host);

      console.log(
        `200 MB directory: vm cp -r in ${(inMs / 1000).toFixed(1)} s, out ${(outMs / 1000).toFixed(1)} s (bench/exec.ts compares with tar | vm ssh | tar)`,
      );
    },
    900_000,
  );

  testNeeds(
    "vm run -- cmd, workspace prepare (its upload on the bulk channel) and export go through the agent; BANGER_GUEST_TRANSPORT=ssh still works",
    needs,
    async () => {
      const repo = join(tmp, "bulk");
      makeBulkRepo(repo, 20);
      const ssh = { BANGER_GUEST_TRANSPORT: "ssh" };
      const [viaSsh, sshMs] = await timed(() => h.run(["vm", "workspace", "prepare", "r1", "--from", repo], { env: ssh }));
      expect(viaSsh.stderr).toBe("");
      expect(viaSsh.code).toBe(0);
      const [viaAgent, agentMs] = await timed(() => h.run(["vm", "workspace", "prepare", "r1", "--from", repo, "--replace"]));
      expect(viaAgent.code).toBe(0);
      console.log(
        `workspace prepare of a 20 MiB repo: agent ${(agentMs / 1000).toFixed(1)} s vs ssh ${(sshMs / 1000).toFixed(1)} s (${(agentMs / sshMs).toFixed(2)}x)`,
      );
      const run = await h.run(["vm", "run", "--name", "r1", "--from", repo, "--", "sh", "-c", "git rev-parse HEAD; exit 5"]);
      expect(run.code).toBe(5);
      expect(run.stdout.trim()).toBe(Bun.spawnSync(["git", "-C", repo, "rev-parse", "HEAD"]).stdout.toString().trim());
      const commit = await h.run([
        "vm",
        "exec",
        "r1",
        "--cwd",
        "/root/repo",
        "--",
        "sh",
        "-c",
        "echo guest > g.txt && git add g.txt && git -c user.name=G -c user.email=g@example.com commit -qm 'guest commit'",
      ]);
      expect(commit.code).toBe(0);
      const exported = await h.run(["vm", "workspace", "export", "r1", "--to", repo]);
      expect(exported.code).toBe(0);
      expect(Bun.spawnSync(["git", "-C", repo, "show", "banger/r1:g.txt"]).stdout.toString()).toBe("guest\n");
    },
    T,
  );
});
