import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AgentClient } from "./client.ts";
import { execPlan, exitOf } from "./exec.ts";
import { creditFrame, encodeFrame, EXEC_WINDOW, F, frameJson, frameSplitter, jsonFrame, type ExecExit, type Frame } from "./frames.ts";
import { encodeLine } from "./protocol.ts";
import { createHandler, type Handler, procDeps } from "./server.ts";
import { agentOnSocket } from "../testing/agent-socket.ts";

// The agent's exec sessions on real processes of this machine, through a real AgentClient
// over a unix socket: the same code paths as in a guest, minus the VM.
const dir = mkdtempSync(join(tmpdir(), "banger-exec-"));
const servers: Server[] = [];
afterAll(() => {
  for (const s of servers) s.close();
  rmSync(dir, { recursive: true, force: true });
});

async function agent(name: string, handler?: Handler): Promise<AgentClient> {
  const { server, client } = await agentOnSocket(join(dir, name), handler);
  servers.push(server);
  return client;
}

/** Runs one exec to its end; `grant` decides whether output is acknowledged. */
async function run(
  client: AgentClient,
  open: object,
  stdin?: Uint8Array,
  opts: { grant?: boolean; onStream?: (send: (b: Uint8Array) => void, id: number) => void } = {},
) {
  const frames: Frame[] = [];
  let out = new Uint8Array(0);
  let outBytes = 0;
  let err = "";
  let resolve!: (e: ExecExit) => void;
  const done = new Promise<ExecExit>((r) => (resolve = r));
  const stream = await client.openStream({
    onFrame: (f) => {
      frames.push(f);
      if (f.type === F.STDOUT || f.type === F.STDERR) {
        if (f.type === F.STDOUT) {
          outBytes += f.payload.length;
          if (out.length < 1 << 20) out = new Uint8Array([...out, ...f.payload.subarray(0, 1 << 20)]);
        } else err += new TextDecoder().decode(f.payload);
        if (opts.grant !== false) stream.send(creditFrame(stream.id, f.payload.length));
      }
      if (f.type === F.EXIT) resolve(frameJson<ExecExit>(f)!);
      if (f.type === F.ERROR) resolve({ code: -1, signal: frameJson<{ message: string }>(f)!.message });
    },
    onGone: () => resolve({ code: -2 }),
  });
  stream.send(jsonFrame(F.OPEN, stream.id, open));
  if (stdin) for (let i = 0; i < stdin.length; i += 65536) stream.send(encodeFrame(F.STDIN, stream.id, stdin.subarray(i, i + 65536)));
  stream.send(encodeFrame(F.STDIN_EOF, stream.id));
  opts.onStream?.((b) => stream.send(b), stream.id);
  return { done, frames, out: () => out, outBytes: () => outBytes, err: () => err, stream };
}

test("frames and JSON lines split apart at any chunk boundary", () => {
  const lines: string[] = [];
  const frames: Frame[] = [];
  const bytes = new Uint8Array([
    ...new TextEncoder().encode(encodeLine({ id: 1, method: "health" })),
    ...encodeFrame(F.STDOUT, 7, new Uint8Array([0, 10, 255, 123])),
    ...new TextEncoder().encode(encodeLine({ id: 2, ok: true, result: 1 })),
    ...creditFrame(9, 4096),
  ]);
  for (const step of [1, 3, 11, bytes.length]) {
    lines.length = 0;
    frames.length = 0;
    const feed = frameSplitter(
      (l) => lines.push(l),
      (f) => frames.push(f),
    );
    for (let i = 0; i < bytes.length; i += step) feed(bytes.subarray(i, i + step));
    expect(lines).toEqual(['{"id":1,"method":"health"}', '{"id":2,"ok":true,"result":1}']);
    expect(frames.map((f) => [f.type, f.stream, [...f.payload]])).toEqual([
      [F.STDOUT, 7, [0, 10, 255, 123]],
      [F.CREDIT, 9, [0, 0, 16, 0]],
    ]);
  }
});

test("a frame with an unknown type or a huge length is dropped up to the next newline", () => {
  const lines: string[] = [];
  const feed = frameSplitter(
    (l) => lines.push(l),
    () => lines.push("frame"),
  );
  const bad = encodeFrame(F.STDOUT, 1, new Uint8Array(4));
  bad[1] = 99;
  feed(new Uint8Array([...bad, 10, ...new TextEncoder().encode('{"id":3}\n')]));
  expect(lines).toEqual(['{"id":3}']);
});

test("execPlan: user, cwd and tty shape the argv and environment; bad ones are named", () => {
  const passwd = join(dir, "passwd");
  Bun.write(passwd, "root:x:0:0:root:/root:/bin/bash\ndev:x:1000:1000::/tmp:/bin/sh\n");
  return Bun.sleep(10).then(() => {
    const plan = execPlan({ argv: ["id"], user: "dev", tty: true, env: { A: "1" } }, passwd);
    expect(plan).toMatchObject({
      argv: ["setsid", "-c", "runuser", "-u", "dev", "--", "id"],
      cwd: "/tmp",
      env: { HOME: "/tmp", USER: "dev", A: "1", TERM: "xterm-256color" },
    });
    expect(execPlan({ argv: ["id"], user: "nobody2" }, passwd)).toBe('there is no user "nobody2" in the guest');
    expect(execPlan({ argv: ["id"], cwd: "/no/such/dir" }, passwd)).toBe("there is no directory /no/such/dir in the guest");
    expect(execPlan({ argv: [] }, passwd)).toBe("exec needs a command");
    expect(exitOf(null, "SIGINT")).toEqual({ code: 130, signal: "SIGINT" });
  });
});

test("exec: exit code, stdin to stdout byte for byte, stderr apart", async () => {
  const client = await agent("a1.sock");
  try {
    expect(await (await run(client, { argv: ["sh", "-c", "exit 7"] })).done).toEqual({ code: 7 });
    const data = crypto.getRandomValues(new Uint8Array(3 * 65536 + 17));
    const r = await run(client, { argv: ["sh", "-c", "cat; echo oops >&2"] }, data);
    expect(await r.done).toEqual({ code: 0 });
    expect(Buffer.compare(Buffer.from(r.out()), Buffer.from(data))).toBe(0);
    expect(r.err()).toBe("oops\n");
    const missing = await run(client, { argv: ["no-such-program-xyz"] });
    expect((await missing.done).code).toBe(127);
    expect(missing.err()).toContain("no-such-program-xyz");
  } finally {
    client.close();
  }
});

test("exec: without credit the agent sends at most one window, then the producer waits", async () => {
  const client = await agent("a2.sock");
  try {
    const r = await run(client, { argv: ["cat", "/dev/zero"] }, undefined, { grant: false });
    const reaches = async (n: number) => {
      for (let i = 0; i < 200 && r.outBytes() < n; i++) await Bun.sleep(25);
      await Bun.sleep(300);
    };
    await reaches(EXEC_WINDOW);
    expect(r.outBytes()).toBe(EXEC_WINDOW);
    r.stream.send(creditFrame(r.stream.id, 100_000));
    await reaches(EXEC_WINDOW + 100_000);
    expect(r.outBytes()).toBe(EXEC_WINDOW + 100_000);
    r.stream.send(encodeFrame(F.KILL, r.stream.id));
    expect((await r.done).signal).toBe("SIGKILL");
  } finally {
    client.close();
  }
});

test("exec: a signal reaches the process group; a tty shows a /dev/pts device; 20 at once keep their output", async () => {
  const client = await agent("a3.sock");
  try {
    const r = await run(client, { argv: ["sh", "-c", "sleep 30; echo not reached"] });
    await Bun.sleep(200);
    r.stream.send(jsonFrame(F.SIGNAL, r.stream.id, { signal: "SIGINT" }));
    expect((await r.done).code).toBe(130);
    const t = await run(client, { argv: ["tty"], tty: true, rows: 30, cols: 100 });
    expect((await t.done).code).toBe(0);
    expect(new TextDecoder().decode(t.out())).toMatch(/^\/dev\/pts\/\d+/);
    const many = await Promise.all(Array.from({ length: 20 }, (_, i) => run(client, { argv: ["sh", "-c", `echo out-${i}`] })));
    const outs = await Promise.all(many.map(async (m) => ((await m.done).code, new TextDecoder().decode(m.out()))));
    expect(outs).toEqual(Array.from({ length: 20 }, (_, i) => `out-${i}\n`));
  } finally {
    client.close();
  }
});

test("an agent without exec gets a clear 'too old' error, not a hang", async () => {
  const old = createHandler(procDeps("old"));
  const client = await agent("old.sock", async (req) =>
    req.method === "hello" ? { id: req.id, ok: false, error: { message: 'unknown method "hello"' } } : old(req),
  );
  try {
    await expect(client.openStream({ onFrame: () => {}, onGone: () => {} })).rejects.toThrow("too old for exec");
  } finally {
    client.close();
  }
});
