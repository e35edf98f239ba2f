/**
 * The daemon's exec socket: the CLI streams `vm exec` frames here directly (no JSON RPC), and
 * the daemon relays them to the VM's agent connection, renumbering the stream. Credit flows
 * end to end (CLI and agent grant it), so the daemon holds at most a window per stream.
 */
import { chmodSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import * as v from "valibot";
import type { AgentClient, AgentStream } from "../agent/client.ts";
import { encodeFrame, F, frameJson, frameSplitter, jsonFrame, type ExecError, type Frame } from "../agent/frames.ts";
import { BangerError, toBangerError } from "../errors.ts";
import { ExecOpenSchema, type ExecOpenRequest } from "../rpc/exec-open.ts";

/** Finds a running VM's agent client for a ref; throws BangerError when it cannot. */
export type AgentFor = (ref: string) => AgentClient;

const FORWARDED = new Set<number>([F.STDIN, F.STDIN_EOF, F.SIGNAL, F.RESIZE, F.CREDIT, F.KILL]);

function errorFrame(err: unknown): Uint8Array {
  const e = toBangerError(err);
  const body: ExecError = { message: e.code === "internal" ? "the daemon failed to start the exec" : e.message, hint: e.hint, code: e.code };
  return jsonFrame(F.ERROR, 1, body);
}

/** Parses the CLI's OPEN frame; the error names what was wrong. */
export function parseOpen(frame: Frame): ExecOpenRequest {
  const raw = frameJson<unknown>(frame);
  const r = v.safeParse(ExecOpenSchema, raw);
  if (r.success) return r.output;
  const issue = r.issues[0];
  const where = issue.path?.map((p) => String(p.key)).join(".");
  throw new BangerError("invalid_argument", `exec request: ${where ? `${where}: ` : ""}${issue.message}`, { hint: "See `banger vm exec --help`." });
}

/** Relays one CLI connection: the first frame opens, the rest flow both ways until EXIT or ERROR. */
function relay(conn: Socket, agentFor: AgentFor, log: (m: string) => void) {
  let stream: AgentStream | null = null;
  let queued: Frame[] = [];
  let finished = false;
  let opening = false;
  const finish = (last?: Uint8Array) => {
    if (finished) return;
    finished = true;
    stream?.close();
    if (last) conn.end(last);
    else conn.end();
  };
  const forward = (f: Frame) => stream?.send(encodeFrame(f.type, stream.id, f.payload));
  const open = async (first: Frame) => {
    const req = parseOpen(first);
    const agent = agentFor(req.vm);
    const { vm: _vm, ...exec } = req;
    stream = await agent.openStream({
      onFrame: (f) => {
        const out = encodeFrame(f.type, 1, f.payload);
        if (f.type === F.EXIT || f.type === F.ERROR) finish(out);
        else conn.write(out);
      },
      onGone: (why) => finish(jsonFrame(F.ERROR, 1, { message: `the guest agent connection was lost: ${why}`, code: "unavailable" } satisfies ExecError)),
    });
    if (finished) return void stream.send(encodeFrame(F.KILL, stream.id));
    stream.send(jsonFrame(F.OPEN, stream.id, exec));
    for (const f of queued) forward(f);
    queued = [];
  };
  conn.on(
    "data",
    frameSplitter(
      () => finish(errorFrame(new Error("not an exec frame"))),
      (f) => {
        if (f.type === F.OPEN && !opening) {
          opening = true;
          void open(f).catch((err) => {
            if (toBangerError(err).code === "internal") log(`exec: ${(err as Error)?.stack ?? err}`);
            finish(errorFrame(err));
          });
        } else if (FORWARDED.has(f.type)) {
          if (stream) forward(f);
          else queued.push(f);
        }
      },
    ),
  );
  conn.on("error", () => conn.destroy());
  conn.on("close", () => {
    if (!finished && stream) stream.send(encodeFrame(F.KILL, stream.id));
    finished = true;
    stream?.close();
  });
}

/** Listens on `path` (mode 0600, in the 0700 runtime dir) for exec connections. */
export function startExecServer(path: string, agentFor: AgentFor, log: (m: string) => void): Promise<Server> {
  rmSync(path, { force: true });
  const server = createServer((conn) => relay(conn, agentFor, log));
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      chmodSync(path, 0o600);
      resolve(server);
    });
  });
}
