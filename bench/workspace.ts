/**
 * Workspace prepare throughput on a generated repository (default 200 MiB of
 * incompressible files, committed), against plain `tar | tar` baselines. Local shell
 * always; over a loopback sshd (ssh2 vs the OpenSSH client) when run as root. With
 * --real, through the compiled CLI into a QEMU guest (needs root, qemu, built dist/).
 *   bun bench/workspace.ts [--real] [MiB]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sshConnect } from "../src/host/ssh.ts";
import { sshShell } from "../src/workspace/ssh-shell.ts";
import { SSHD, startTestSshd } from "../src/testing/sshd-fixture.ts";
import { bangerBin } from "../src/testing/cli.ts";
import { realGuestChecks, realHome } from "../src/testing/real-env.ts";
import { hasFile, isRoot, missing } from "../src/testing/skip.ts";
import { type GuestShell, localShell, prepareWorkspace, syncWorkspace } from "../src/workspace/index.ts";
import { makeBulkRepo } from "../src/testing/testrepo.ts";

const args = process.argv.slice(2);
const real = args.includes("--real");
const mib = Number(args.find((a) => a !== "--real") ?? 200);
const tmp = mkdtempSync(join(tmpdir(), "banger-ws-bench-"));

async function timed(label: string, fn: () => Promise<number | void>): Promise<void> {
  const t = performance.now();
  const bytes = await fn();
  const s = (performance.now() - t) / 1000;
  const rate = typeof bytes === "number" ? `  ${(bytes / 1e6 / s).toFixed(0)} MB/s of ${(bytes / 1e6).toFixed(0)} MB` : "";
  console.log(`${label.padEnd(44)} ${s.toFixed(2).padStart(7)} s${rate}`);
}

function sh(cmd: string): void {
  const r = Bun.spawnSync(["sh", "-c", cmd], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd}: ${r.stderr.toString()}`);
}

async function runSuite(name: string, shell: GuestShell, root: string, repo: string, baseline: string): Promise<void> {
  const dest = join(root, "repo");
  await timed(`${name}: baseline tar -c . | tar -x`, async () => sh(baseline.replaceAll("DEST", dest)));
  rmSync(dest, { recursive: true, force: true });
  await timed(`${name}: prepare (working tree)`, async () => (await prepareWorkspace({ shell, from: repo, guestDir: dest })).bytes);
  await timed(`${name}: re-run sync, no change`, async () => void (await syncWorkspace({ shell, from: repo, guestDir: dest })));
  writeFileSync(join(repo, "edited.txt"), `one small change ${Date.now()}\n`);
  await timed(`${name}: re-run sync, one-file change`, async () => void (await syncWorkspace({ shell, from: repo, guestDir: dest })));
  rmSync(join(repo, "edited.txt"));
  rmSync(dest, { recursive: true, force: true });
  await timed(`${name}: prepare --full-copy`, async () => (await prepareWorkspace({ shell, from: repo, guestDir: dest, fullCopy: true })).bytes);
  rmSync(dest, { recursive: true, force: true });
}

/** The real-guest mode: CLI prepare/export against `tar | banger vm ssh | tar` into a booted VM. */
async function realSuite(repo: string): Promise<void> {
  const why = missing(realGuestChecks());
  if (why) return console.log(`real guest: skipped (${why})`);
  const h = await realHome();
  const cli = async (...argv: string[]) => {
    const r = await h.run(argv);
    if (r.code !== 0) throw new Error(`banger ${argv.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const mibOf = (out: string) => Number(/\(([\d.]+) MiB/.exec(out)?.[1] ?? 0) * 2 ** 20;
  try {
    await timed("real guest: vm create (boot to ready)", async () => void (await cli("vm", "create", "--name", "bench")));
    const pipe = `tar -C ${repo} -c . | ${bangerBin} vm ssh bench -- sh -c 'mkdir -p /root/b && tar -x -C /root/b'`;
    await timed("real guest: baseline tar -c . | tar -x", async () => {
      const r = Bun.spawnSync(["sh", "-c", pipe], { env: h.env, stderr: "pipe" });
      if (r.exitCode !== 0) throw new Error(`${pipe}: ${r.stderr.toString()}`);
    });
    await cli("vm", "ssh", "bench", "--", "sh", "-c", "rm -rf /root/b && sync");
    await timed("real guest: prepare (working tree)", async () => mibOf(await cli("vm", "workspace", "prepare", "bench", "--from", repo)));
    // What a second `vm run` adds before its command: nothing new, then one edited file.
    await timed("real guest: re-run sync, no change", async () => void (await cli("vm", "workspace", "sync", "bench", "--from", repo)));
    writeFileSync(join(repo, "edited.txt"), `one small change ${Date.now()}\n`);
    await timed("real guest: re-run sync, one-file change", async () => void (await cli("vm", "workspace", "sync", "bench", "--from", repo)));
    rmSync(join(repo, "edited.txt"));
    await timed("real guest: prepare --full-copy", async () =>
      mibOf(await cli("vm", "workspace", "prepare", "bench", "--from", repo, "--full-copy", "--replace")),
    );
    await cli(
      "vm",
      "ssh",
      "bench",
      "--",
      "sh",
      "-c",
      "cd /root/repo && head -c 1048576 /dev/urandom > guest.bin && git add -A && " +
        "git -c user.name=Bench -c user.email=bench@example.com commit -qm guest && echo x > dirty.txt",
    );
    await timed("real guest: export (1 commit + uncommitted)", async () => void (await cli("vm", "workspace", "export", "bench", "--to", repo)));
  } finally {
    await h.run(["vm", "delete", "--force", "bench"]);
    await h.teardownNet();
    await h.cleanup();
  }
}

/** Local shell and loopback sshd: the transport's own cost, no guest. */
async function loopbackSuites(repo: string): Promise<void> {
  const root = join(tmp, "guest");
  mkdirSync(root);
  await runSuite("local", localShell(root), root, repo, `mkdir -p DEST && tar -c -C ${repo} . | sh -c 'tar -x -C DEST'`);
  if (!isRoot || !hasFile(SSHD)) return console.log("loopback ssh: skipped (needs root and /usr/sbin/sshd)");
  const sshd = await startTestSshd();
  const conn = await sshConnect({ host: "127.0.0.1", port: sshd.port, privateKey: sshd.clientKey, knownHostKey: sshd.hostPublicKey });
  try {
    writeFileSync(join(sshd.dir, "client"), sshd.clientKey, { mode: 0o600 });
    const ssh = `ssh -q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -i ${sshd.dir}/client -p ${sshd.port} root@127.0.0.1`;
    await runSuite("loopback ssh", sshShell(conn), root, repo, `tar -c -C ${repo} . | ${ssh} 'mkdir -p DEST && tar -x -C DEST'`);
  } finally {
    conn.end();
    await sshd.stop();
  }
}

try {
  const repo = join(tmp, "repo");
  await timed(`generate ${mib} MiB repo (+ commit)`, async () => makeBulkRepo(repo, mib));
  await (real ? realSuite(repo) : loopbackSuites(repo));
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
