import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A real sshd on 127.0.0.1 for tests: its own host key, one authorized client key, root login. */
export interface TestSshd {
  port: number;
  /** The client's private key (OpenSSH text). */
  clientKey: string;
  /** The server's host public key line. */
  hostPublicKey: string;
  /** A scratch directory that is removed by stop(). */
  dir: string;
  stop(): Promise<void>;
}

export const SSHD = "/usr/sbin/sshd";

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

function keygen(path: string): void {
  const r = Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "banger-test", "-f", path]);
  if (r.exitCode !== 0) throw new Error(`ssh-keygen: ${r.stderr.toString()}`);
}

async function listening(port: number, deadline: number): Promise<void> {
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect(port, "127.0.0.1", () => (s.end(), r(true)));
      s.on("error", () => r(false));
    });
    if (ok) return;
    await Bun.sleep(50);
  }
  throw new Error(`test sshd did not listen on ${port}`);
}

/** Starts sshd (needs root). The caller must call stop(), which also removes the keys. */
export async function startTestSshd(): Promise<TestSshd> {
  const dir = mkdtempSync(join(tmpdir(), "banger-sshd-"));
  // sshd's compiled-in privilege separation dir; left in place since another sshd may share it.
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  keygen(join(dir, "host"));
  keygen(join(dir, "client"));
  writeFileSync(join(dir, "authorized_keys"), readFileSync(join(dir, "client.pub")));
  const port = await freePort();
  const config = [
    `Port ${port}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${dir}/host`,
    `PidFile ${dir}/sshd.pid`,
    `AuthorizedKeysFile ${dir}/authorized_keys`,
    "StrictModes no",
    "PermitRootLogin prohibit-password",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    "LogLevel ERROR",
  ].join("\n");
  writeFileSync(join(dir, "sshd_config"), `${config}\n`);
  const proc = Bun.spawn([SSHD, "-D", "-e", "-f", join(dir, "sshd_config")], { stdout: "ignore", stderr: "pipe" });
  // If the test process dies without calling stop(), sshd must not outlive it.
  const onExit = () => {
    proc.kill();
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", onExit);
  const stop = async () => {
    process.off("exit", onExit);
    proc.kill();
    await proc.exited;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await listening(port, Date.now() + 5_000);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    port,
    clientKey: readFileSync(join(dir, "client"), "utf8"),
    hostPublicKey: readFileSync(join(dir, "host.pub"), "utf8").trim(),
    dir,
    stop,
  };
}
