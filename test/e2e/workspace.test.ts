import { afterAll, beforeAll, describe, expect } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Client } from "ssh2";
import { sshConnect } from "../../src/host/ssh.ts";
import { sshShell } from "../../src/workspace/ssh-shell.ts";
import { SSHD, startTestSshd, type TestSshd } from "../../src/testing/sshd-fixture.ts";
import { hasFile, isRoot, testNeeds } from "../../src/testing/skip.ts";
import { exportWorkspace, prepareWorkspace } from "../../src/workspace/index.ts";
import { git, makeFixtureRepo, repoState } from "../../src/testing/testrepo.ts";

// The "guest" is this machine reached through a real sshd on loopback: the whole path
// (ssh2 channel, streamed tar, bundle back) is real; only the kernel underneath is shared.
const needs: Array<[boolean, string]> = [
  [isRoot, "needs root to run sshd"],
  [hasFile(SSHD), "needs openssh-server (/usr/sbin/sshd)"],
];

describe("workspace over real SSH (loopback sshd)", () => {
  let sshd: TestSshd | undefined;
  let conn: Client | undefined;
  const tmp = mkdtempSync(join(tmpdir(), "banger-ws-e2e-"));
  beforeAll(async () => {
    if (!needs.every(([ok]) => ok)) return;
    sshd = await startTestSshd();
    conn = await sshConnect({ host: "127.0.0.1", port: sshd.port, privateKey: sshd.clientKey, knownHostKey: sshd.hostPublicKey, timeoutMs: 5_000 });
  });
  afterAll(async () => {
    conn?.end();
    await sshd?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  testNeeds("prepare then export round-trips through ssh; host untouched (needs root, sshd)", needs, async () => {
    const { repo } = makeFixtureRepo(tmp);
    // A larger binary file so the tar crosses many SSH window sizes.
    const blob = new Uint8Array(24 << 20).map((_, i) => (i * 7919) % 256);
    writeFileSync(join(repo, "big.bin"), blob);
    const shell = sshShell(conn!);
    const guestDir = join(tmp, "guest-root", "repo");
    const before = repoState(repo);

    const p = await prepareWorkspace({ shell, from: repo, guestDir });
    console.log(`prepare over ssh: ${(p.bytes / 1e6).toFixed(1)} MB in ${p.ms} ms`);
    expect(repoState(repo)).toEqual(before);
    expect(git(guestDir, "log", "--format=%H")).toBe(git(repo, "log", "--format=%H"));
    expect(git(guestDir, "status", "--porcelain=v1", "--untracked-files=all")).toBe(before.status);
    expect(Buffer.compare(readFileSync(join(guestDir, "big.bin")), Buffer.from(blob))).toBe(0);
    expect(readdirSync(join(guestDir, "sub"))).toEqual([]);

    git(guestDir, "add", "-A");
    git(guestDir, "commit", "-q", "-m", "guest work");
    writeFileSync(join(guestDir, "after.txt"), "uncommitted in the guest\n");
    const r = await exportWorkspace({ shell, to: repo, vmName: "e2e", guestDir });
    expect(r).toMatchObject({ branch: "banger/e2e", commits: 1, uncommittedIncluded: true });
    expect(git(repo, "show", "banger/e2e:after.txt")).toBe("uncommitted in the guest");
    const after = repoState(repo);
    expect({ ...after, refs: "" }).toEqual({ ...before, refs: "" });
  });
});
