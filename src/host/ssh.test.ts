import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { hasFile, isRoot, testNeeds } from "../testing/skip.ts";
import { cappedSink } from "../workspace/export.ts";
import { sshShell } from "../workspace/ssh-shell.ts";
import { hostKeyBlob, MAX_COLLECTED_BYTES, readSshBanner, sshConnect, sshExec, waitForSsh, waitForSshBanner } from "./ssh.ts";
import type { Client } from "ssh2";
import { guestShellContract } from "../testing/shell-contract.ts";
import { SSHD, startTestSshd, type TestSshd } from "../testing/sshd-fixture.ts";
import { rejection } from "../testing/errors.ts";

const canSshd: Array<[boolean, string]> = [
  [isRoot, "needs root to run sshd"],
  [hasFile(SSHD), "needs openssh-server (/usr/sbin/sshd)"],
];

describe("waitForSsh (fake connect, pinned clock)", () => {
  test("retries until a login succeeds and reports the attempts", async () => {
    let t = 0;
    let calls = 0;
    const attempts = await waitForSsh(
      { host: "h", privateKey: "k", timeoutMs: 10_000, intervalMs: 100 },
      {
        now: () => t,
        sleep: async (ms) => void (t += ms),
        connect: async () => {
          if (++calls < 3) throw new BangerError("unavailable", "refused");
          return { end() {} } as never;
        },
      },
    );
    expect(attempts).toBe(3);
  });

  test("gives up at the deadline with a timeout naming the last error", async () => {
    let t = 0;
    const e = await rejection(
      waitForSsh(
        { host: "h", port: 2222, privateKey: "k", timeoutMs: 1_000, intervalMs: 100 },
        { now: () => t, sleep: async (ms) => void (t += ms), connect: async () => Promise.reject(new Error("ECONNREFUSED")) },
      ),
    );
    expect(e.code).toBe("timeout");
    expect(e.message).toContain("h:2222");
    expect(e.message).toContain("ECONNREFUSED");
  });

  test("a refused key fails at once instead of waiting", async () => {
    let calls = 0;
    const e = await rejection(
      waitForSsh(
        { host: "h", privateKey: "k", timeoutMs: 60_000 },
        { connect: async () => (calls++, Promise.reject(new BangerError("permission_denied", "no"))) },
      ),
    );
    expect(e.code).toBe("permission_denied");
    expect(calls).toBe(1);
  });

  test("hostKeyBlob refuses junk", () => {
    expect(() => hostKeyBlob("not a key")).toThrow(BangerError);
  });
});

describe("ssh against a real sshd on loopback (root)", () => {
  let sshd: TestSshd | undefined;
  let shared: Client | undefined;
  const opts = () => ({ host: "127.0.0.1", port: sshd!.port, privateKey: sshd!.clientKey, knownHostKey: sshd!.hostPublicKey, timeoutMs: 5_000 });
  beforeAll(async () => {
    if (!canSshd.every(([ok]) => ok)) return;
    sshd = await startTestSshd();
    shared = await sshConnect(opts());
  });
  afterAll(async () => {
    shared?.end();
    await sshd?.stop();
  });

  guestShellContract(
    "ssh",
    () => sshShell(shared!),
    (name, fn) => testNeeds(`${name} (needs root, sshd)`, canSshd, fn),
  );

  testNeeds("exec streams stdin in and stdout/stderr out with the exit code (needs root, sshd)", canSshd, async () => {
    const conn = await sshConnect(opts());
    try {
      expect(await sshExec(conn, "echo out; echo err >&2; exit 3")).toEqual({ code: 3, stdout: "out\n", stderr: "err\n" });
      const big = new Uint8Array(8 << 20).map((_, i) => i % 251);
      async function* chunks() {
        for (let i = 0; i < big.length; i += 1 << 16) yield big.subarray(i, i + (1 << 16));
      }
      const r = await sshExec(conn, "wc -c; sha256sum", { stdin: chunks() });
      expect(r.stdout.split("\n")[0]).toBe(String(big.length));
      let streamed = 0;
      const s = await sshShell(conn).exec("head -c 3000000 /dev/zero", { onStdout: (c) => void (streamed += c.byteLength) });
      expect({ code: s.code, stdout: s.stdout, streamed }).toEqual({ code: 0, stdout: "", streamed: 3_000_000 });
      expect((await sshExec(conn, "cat", { stdin: new TextEncoder().encode("buffer in") })).stdout).toBe("buffer in");
    } finally {
      conn.end();
    }
  });

  testNeeds("endless guest output: collected output stops at its cap, a throwing sink ends the command (needs root, sshd)", canSshd, async () => {
    const conn = await sshConnect(opts());
    try {
      const flood = await rejection(sshExec(conn, "cat /dev/zero"));
      expect(flood.code).toBe("failed_precondition");
      expect(flood.message).toContain(`more than ${MAX_COLLECTED_BYTES >> 20} MiB to stdout`);
      const sink = cappedSink(() => {}, "the guest's bundle", 1 << 20);
      const capped = await rejection(sshShell(conn).exec("cat /dev/zero", { onStdout: sink }));
      expect(capped.message).toContain("the guest's bundle passed 1 MiB");
      expect((await sshExec(conn, "echo still-usable")).stdout).toBe("still-usable\n");
    } finally {
      conn.end();
    }
  });

  testNeeds("a host key other than the recorded one is refused (needs root, sshd)", canSshd, async () => {
    const wrong = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIh8L3C9zqX9vPq4Fj0u0mVv9n0m4GQ0dJ2r3m0m0m0m other";
    const e = await rejection(sshConnect({ ...opts(), knownHostKey: wrong }));
    expect(e.code).toBe("permission_denied");
    expect(e.message).toContain("host key");
  });

  testNeeds("an unknown client key is refused (needs root, sshd)", canSshd, async () => {
    const other = Bun.spawnSync(["sh", "-c", `k=$(mktemp -u); ssh-keygen -q -t ed25519 -N '' -f $k && cat $k && rm -f $k $k.pub`]).stdout.toString();
    const e = await rejection(sshConnect({ ...opts(), privateKey: other }));
    expect(e.code).toBe("permission_denied");
  });

  testNeeds("connects over a pre-connected stream, and waitForSsh sees a live sshd (needs root, sshd)", canSshd, async () => {
    const sock = connect(sshd!.port, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    const conn = await sshConnect({ ...opts(), host: "guest", sock });
    expect((await sshExec(conn, "echo via-sock")).stdout).toBe("via-sock\n");
    conn.end();
    expect(await waitForSsh({ ...opts(), timeoutMs: 5_000 })).toBe(1);
  });

  test("an unparsable private key is a usage error", async () => {
    const e = await rejection(sshConnect({ host: "127.0.0.1", port: 1, privateKey: "x", timeoutMs: 2_000 }));
    expect(e.code).toBe("invalid_argument");
  });

  testNeeds("a closed port is unavailable (needs root, sshd)", canSshd, async () => {
    const e = await rejection(sshConnect({ ...opts(), port: 1 }));
    expect(e.code).toBe("unavailable");
    expect(e.message).toContain("127.0.0.1:1");
  });
});

test("a server that stalls the handshake and then drops the connection gives one rejection and no stray error event", async () => {
  const stray: Error[] = [];
  const onStray = (e: Error) => void stray.push(e);
  process.on("uncaughtException", onStray);
  const server = createServer((sock) => void setTimeout(() => sock.destroy(), 300));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  try {
    const port = (server.address() as { port: number }).port;
    const dir = mkdtempSync(join(tmpdir(), "banger-sshkey-"));
    Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(dir, "k")]);
    const privateKey = readFileSync(join(dir, "k"), "utf8");
    rmSync(dir, { recursive: true, force: true });
    const err = await sshConnect({ host: "127.0.0.1", port, privateKey, timeoutMs: 100 }).catch((e: Error) => e);
    expect((err as Error).message).toContain("did not complete its handshake in time");
    await Bun.sleep(600); // the drop comes after the timeout, as a second error from ssh2
    expect(stray.map((e) => e.message)).toEqual([]);
  } finally {
    process.off("uncaughtException", onStray);
    server.close();
  }
});

describe("the banner probe for restored guests", () => {
  const serve = async (send: string) => {
    const { createServer } = await import("node:net");
    const server = createServer((c) => (send ? c.end(send) : undefined));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return { server, port: (server.address() as { port: number }).port };
  };

  test("reads the identification line, after other lines a server may send first", async () => {
    const { server, port } = await serve("hello\r\nSSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
    expect(await readSshBanner("127.0.0.1", port)).toBe("SSH-2.0-OpenSSH_9.2p1 Debian-2");
    server.close();
  });

  test("a server that is not SSH, or says nothing, is not ready", async () => {
    const closer = await serve("HTTP/1.1 400 Bad Request\r\n\r\n");
    await expect(readSshBanner("127.0.0.1", closer.port)).rejects.toThrow("closed the connection before its SSH banner");
    closer.server.close();
    const silent = await serve("");
    await expect(readSshBanner("127.0.0.1", silent.port, 300)).rejects.toThrow("no SSH banner");
    silent.server.close();
  });

  test("waitForSshBanner retries until the banner comes, then gives a timeout error naming the host", async () => {
    let calls = 0;
    const read = async () => {
      if (++calls < 3) throw new Error("ECONNREFUSED");
      return "SSH-2.0-x";
    };
    await waitForSshBanner("10.0.0.9", 5_000, { read, sleep: async () => {} });
    expect(calls).toBe(3);
    await expect(
      waitForSshBanner("10.0.0.9", 50, { read: async () => Promise.reject(new Error("ECONNREFUSED")), sleep: (ms) => Bun.sleep(ms) }),
    ).rejects.toThrow("SSH on 10.0.0.9:22 did not answer within 0s after the restore (last: ECONNREFUSED)");
  });
});
