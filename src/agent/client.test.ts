import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BangerError } from "../errors.ts";
import { AgentClient, unixConnector, waitForAgent } from "./client.ts";

const entry = join(import.meta.dir, "..", "guest-agent.ts");
const dir = mkdtempSync(join(tmpdir(), "banger-agent-client-"));
const agents: Bun.Subprocess[] = [];
const servers: Server[] = [];
let n = 0;
const sockPath = () => join(dir, `a${n++}.sock`);

function startAgent(path: string) {
  const proc = Bun.spawn(["bun", entry, "--unix", path], { stdout: "ignore", stderr: "ignore" });
  agents.push(proc);
  return proc;
}

/** A unix server that answers each line with whatever `reply` returns (or nothing). */
function fakeAgent(path: string, reply: (line: string) => string | null): Promise<Server> {
  const server = createServer((c) => {
    let buf = "";
    c.on("data", (d) => {
      buf += d.toString();
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const out = line.trim() ? reply(line) : null;
        if (out !== null) c.write(out);
      }
    });
  });
  servers.push(server);
  return new Promise((r) => server.listen(path, () => r(server)));
}

afterEach(() => {
  for (const a of agents.splice(0)) a.kill();
  for (const s of servers.splice(0)) s.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("AgentClient against the real agent on a unix socket", () => {
  test("health and ports, many calls multiplexed on one connection", async () => {
    const path = sockPath();
    startAgent(path);
    const { client, health, attempts, elapsedMs } = await waitForAgent(unixConnector(path), {
      timeoutMs: 10_000,
      intervalMs: 50,
      logPath: "/x/console.log",
    });
    try {
      expect(health.version).toBe("dev");
      expect(health.boot_id).toMatch(/^[0-9a-f-]{36}$/);
      expect(health.uptime_s).toBeGreaterThan(0);
      expect(typeof health.hostname).toBe("string");
      const server = createServer();
      servers.push(server);
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
      const port = (server.address() as { port: number }).port;
      const [ports, ...healths] = await Promise.all([client.ports(), ...Array.from({ length: 20 }, () => client.health())]);
      expect(healths).toHaveLength(20);
      const mine = ports.sockets.find((s) => s.port === port && s.proto === "tcp");
      expect(mine).toMatchObject({ address: "127.0.0.1", pid: process.pid });
      expect(mine?.command).toContain("bun");
      const t = performance.now();
      for (let i = 0; i < 50; i++) await client.health();
      console.log(`agent ready after ${attempts} attempt(s) in ${elapsedMs.toFixed(0)} ms; health round trip ${((performance.now() - t) / 50).toFixed(2)} ms`);
    } finally {
      client.close();
    }
  });

  test("waitForAgent retries until the agent starts listening", async () => {
    const path = sockPath();
    setTimeout(() => startAgent(path), 400);
    const ready = await waitForAgent(unixConnector(path), { timeoutMs: 10_000, intervalMs: 50, logPath: "/x/console.log" });
    ready.client.close();
    expect(ready.attempts).toBeGreaterThan(1);
    expect(ready.health.version).toBe("dev");
  });

  test("a new connection after the agent restarts", async () => {
    const path = sockPath();
    const first = startAgent(path);
    const { client } = await waitForAgent(unixConnector(path), { timeoutMs: 10_000, intervalMs: 50, logPath: "l" });
    first.kill();
    await first.exited;
    await expect(client.health({ timeoutMs: 1000 })).rejects.toThrow(/guest agent/);
    startAgent(path);
    const again = await waitForAgent(unixConnector(path), { timeoutMs: 10_000, intervalMs: 50, logPath: "l" });
    again.client.close();
    // The old client reconnects on its own on the next call.
    expect((await client.health()).version).toBe("dev");
    client.close();
  });
});

describe("AgentClient edge cases", () => {
  test("timeout error names the VM log and says how long it waited", async () => {
    const err = await waitForAgent(unixConnector(join(dir, "nobody.sock")), {
      timeoutMs: 300,
      intervalMs: 50,
      logPath: "/var/vms/t1/console.log",
    }).catch((e) => e);
    expect(err).toBeInstanceOf(BangerError);
    expect(err.code).toBe("timeout");
    expect(err.message).toContain("did not answer within 0.3s");
    expect(err.message).toContain("/var/vms/t1/console.log");
    expect(err.message).toContain("ENOENT");
    expect(err.hint).toContain("/var/vms/t1/console.log");
  });

  const health = (version: string) => ({ version, uptime_s: 1.5, boot_id: "b", hostname: "h" });

  test("a silent agent times out per call; the connection stays usable", async () => {
    const path = sockPath();
    let answer = false;
    await fakeAgent(path, (line) => {
      const { id } = JSON.parse(line);
      return answer ? `${JSON.stringify({ id, ok: true, result: health("v") })}\n` : null;
    });
    const client = new AgentClient(unixConnector(path));
    const err = await client.health({ timeoutMs: 100 }).catch((e) => e);
    expect(err.code).toBe("timeout");
    expect(err.message).toBe('the guest agent did not answer "health" within 100 ms');
    answer = true;
    expect((await client.health()).version).toBe("v");
    client.close();
  });

  test("garbage, stale ids and agent errors", async () => {
    const path = sockPath();
    await fakeAgent(path, (line) => {
      const { id, method } = JSON.parse(line);
      if (method === "ports") return `${JSON.stringify({ id, ok: false, error: { message: "no /proc" } })}\n`;
      return (
        `\u0000\u0007junk\n${JSON.stringify({ id: id + 1000, ok: true, result: 1 })}\n{"id":${id},"ok":tr` + `ue,"result":${JSON.stringify(health("ok"))}}\n`
      );
    });
    const client = new AgentClient(unixConnector(path));
    expect((await client.health()).version).toBe("ok");
    const err = await client.ports().catch((e) => e);
    expect(err.code).toBe("unavailable");
    expect(err.message).toBe('the guest agent failed "ports": no /proc');
    client.close();
  });

  test("a failing connect becomes an unavailable error", async () => {
    const client = new AgentClient(() => Promise.reject(new Error("vsock port 1024 refused")));
    const err = await client.health().catch((e) => e);
    expect(err.code).toBe("unavailable");
    expect(err.message).toBe("cannot reach the guest agent: vsock port 1024 refused");
  });
});
