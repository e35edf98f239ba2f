/**
 * Workspace prepare throughput on a generated repository (default 200 MiB of
 * incompressible files, committed), against plain `tar | tar` baselines. Local shell
 * always; over a loopback sshd (ssh2 vs the OpenSSH client) when run as root.
 *   bun bench/workspace.ts [MiB]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sshConnect, sshShell } from "../src/host/ssh.ts";
import { SSHD, startTestSshd } from "../src/host/sshd-fixture.ts";
import { hasFile, isRoot } from "../src/testing/skip.ts";
import { type GuestShell, localShell, prepareWorkspace } from "../src/vm/workspace.ts";
import { git } from "../src/vm/workspace/testrepo.ts";

const mib = Number(process.argv[2] ?? 200);
const tmp = mkdtempSync(join(tmpdir(), "banger-ws-bench-"));

function generate(repo: string): void {
  mkdirSync(repo, { recursive: true });
  git(repo, "init", "-q");
  const fileSize = 128 << 10;
  const files = Math.round((mib << 20) / fileSize);
  const buf = new Uint8Array(fileSize);
  for (let i = 0; i < files; i++) {
    crypto.getRandomValues(buf.subarray(0, 65536));
    crypto.getRandomValues(buf.subarray(65536));
    mkdirSync(join(repo, `d${i % 32}`), { recursive: true });
    writeFileSync(join(repo, `d${i % 32}`, `f${i}.bin`), buf);
  }
  git(repo, "add", ".");
  git(repo, "-c", "user.name=B", "-c", "user.email=b@example.com", "commit", "-q", "-m", "bench");
}

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
  await timed(`${name}: prepareWorkspace (working tree)`, async () => (await prepareWorkspace({ shell, from: repo, guestDir: dest })).bytes);
  rmSync(dest, { recursive: true, force: true });
  await timed(`${name}: prepareWorkspace --full-copy`, async () => (await prepareWorkspace({ shell, from: repo, guestDir: dest, fullCopy: true })).bytes);
  rmSync(dest, { recursive: true, force: true });
}

try {
  const repo = join(tmp, "repo");
  await timed(`generate ${mib} MiB repo (+ commit)`, async () => generate(repo));
  const root = join(tmp, "guest");
  mkdirSync(root);
  await runSuite("local", localShell(root), root, repo, `mkdir -p DEST && tar -c -C ${repo} . | sh -c 'tar -x -C DEST'`);
  if (isRoot && hasFile(SSHD)) {
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
  } else {
    console.log("loopback ssh: skipped (needs root and /usr/sbin/sshd)");
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
