import { afterAll, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AgentClient } from "../agent/client.ts";
import { agentOnSocket } from "../testing/agent-socket.ts";
import { startExec } from "../cli/exec-client.ts";
import { startExecServer, type AgentTarget } from "./exec-server.ts";

// The whole exec path minus the VM: the CLI's client, the daemon's exec socket and a real
// agent (real processes of this machine) on a unix socket; the bulk channel over loopback.
const dir = mkdtempSync(join(tmpdir(), "banger-bulk-"));
const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
  rmSync(dir, { recursive: true, force: true });
});

async function setup(ip: string): Promise<{ socket: string; agent: AgentClient; logs: string[] }> {
  const logs: string[] = [];
  const { server, client: agent } = await agentOnSocket(join(dir, `agent-${servers.length}`));
  servers.push(server);
  const socket = join(dir, `exec-${servers.length}`);
  servers.push(
    await startExecServer(
      socket,
      (): AgentTarget => ({ client: agent, ip }),
      (m) => void logs.push(m),
    ),
  );
  return { socket, agent, logs };
}

async function* chunks(total: number, size = 256 * 1024) {
  for (let at = 0; at < total; at += size) yield new Uint8Array(Math.min(size, total - at)).fill(at % 251);
}

async function runExec(socket: string, argv: string[], input: number, bulk: boolean) {
  const hash = createHash("sha256");
  for await (const c of chunks(input)) hash.update(c);
  let out = "";
  let err = "";
  const h = await startExec(
    socket,
    { vm: "v", argv, bulk },
    { stdin: chunks(input), stdout: (c) => void (out += new TextDecoder().decode(c)), stderr: (c) => void (err += new TextDecoder().decode(c)) },
  );
  return { exit: await h.done, out, err, want: hash.digest("hex") };
}

test("a bulk exec moves stdin and stdout over TCP; stderr and the exit code still arrive, in order", async () => {
  const { socket, agent, logs } = await setup("127.0.0.1");
  const r = await runExec(socket, ["sh", "-c", "sha256sum; echo to-stderr >&2; exit 3"], 20 << 20, true);
  expect(agent.protocol).toBe(3);
  expect(logs).toEqual([]);
  expect(r.exit.code).toBe(3);
  expect(r.out.split(" ")[0]).toBe(r.want);
  expect(r.err).toBe("to-stderr\n");
}, 30_000);

test("large stdout over the bulk channel arrives whole", async () => {
  const { socket } = await setup("127.0.0.1");
  let n = 0;
  const h = await startExec(
    socket,
    { vm: "v", argv: ["head", "-c", String(30 << 20), "/dev/zero"], bulk: true },
    { stdout: (c) => void (n += c.length), stderr: () => {} },
  );
  expect((await h.done).code).toBe(0);
  expect(n).toBe(30 << 20);
}, 30_000);

test("when the daemon cannot reach the listener, the same exec falls back to frames", async () => {
  // 127.0.0.2 answers too on Linux, so use an address with nothing behind it: port refusal is what the fallback sees.
  const { socket, logs } = await setup("192.0.2.1");
  const r = await runExec(socket, ["sh", "-c", "sha256sum; echo e >&2"], 2 << 20, true);
  expect(logs.join("\n")).toContain("no bulk channel to 192.0.2.1:");
  expect(r.exit.code).toBe(0);
  expect(r.out.split(" ")[0]).toBe(r.want);
  expect(r.err).toBe("e\n");
}, 30_000);

test("a connection without the token is refused and does not take the stream", async () => {
  const { listenBulk } = await import("../agent/bulk.ts");
  const { createConnection } = await import("node:net");
  const l = await listenBulk("a".repeat(64), 5000);
  const stranger = createConnection({ host: "127.0.0.1", port: l.port });
  stranger.write("b".repeat(64));
  const closed = new Promise((r) => stranger.on("close", r));
  await closed;
  const good = createConnection({ host: "127.0.0.1", port: l.port });
  good.write(`${"a".repeat(64)}hello`);
  const link = await l.link;
  expect(link?.first.toString()).toBe("hello");
  link?.conn.destroy();
  good.destroy();
});
