/**
 * What the guest agent answers, independent of the transport: health and ports read from
 * /proc through a narrow filesystem seam, and a line-protocol loop for any duplex stream.
 */
import { reidentify, type ReidentifyDeps } from "./reidentify.ts";
import { readFile, readdir, readlink } from "node:fs/promises";
import { hostname } from "node:os";
import { commandLine, inodeOwners, joinSockets, parseProcNet, type ProcessInfo } from "./ports.ts";
import { ExecSessions } from "./exec.ts";
import { frameSplitter, PROTOCOL_VERSION } from "./frames.ts";
import { AGENT_METHODS, encodeLine, parseRequest, type AgentHealth, type AgentPorts, type AgentRequest, type AgentResponse } from "./protocol.ts";

/** The agent's view of the guest: /proc reads and the hostname. */
export interface AgentDeps {
  version: string;
  readText(path: string): Promise<string>;
  list(dir: string): Promise<string[]>;
  link(path: string): Promise<string>;
  hostname(): string;
  /** Set only in a guest: what `reidentify` changes. */
  reidentify?: ReidentifyDeps;
}

/** The real guest: node:fs on /proc. */
export function procDeps(version: string): AgentDeps {
  return {
    version,
    readText: (p) => readFile(p, "utf8"),
    list: (d) => readdir(d),
    link: (p) => readlink(p),
    hostname: () => hostname(),
  };
}

/** Answers `health` from /proc/uptime and /proc/sys/kernel/random/boot_id. */
export async function collectHealth(deps: AgentDeps): Promise<AgentHealth> {
  const [uptime, bootId] = await Promise.all([deps.readText("/proc/uptime"), deps.readText("/proc/sys/kernel/random/boot_id")]);
  return {
    version: deps.version,
    uptime_s: Number.parseFloat(uptime.split(/\s+/)[0] ?? "0") || 0,
    boot_id: bootId.trim(),
    hostname: deps.hostname(),
  };
}

const orEmpty = <T>(p: Promise<T>, empty: T) => p.catch(() => empty);

/** Every process's fd links; processes that exit mid-scan are skipped. */
async function processSockets(deps: AgentDeps) {
  const pids = (await deps.list("/proc")).filter((e) => /^\d+$/.test(e)).map(Number);
  return Promise.all(
    pids.map(async (pid) => {
      const fds = await orEmpty(deps.list(`/proc/${pid}/fd`), [] as string[]);
      const fdLinks = await Promise.all(fds.map((fd) => orEmpty(deps.link(`/proc/${pid}/fd/${fd}`), "")));
      return { pid, fdLinks };
    }),
  );
}

/** Answers `ports`: listening TCP and unconnected UDP sockets with their owning process. */
export async function collectPorts(deps: AgentDeps): Promise<AgentPorts> {
  const tables = await Promise.all(
    (["tcp", "tcp6", "udp", "udp6"] as const).map(async (t) =>
      parseProcNet(await orEmpty(deps.readText(`/proc/net/${t}`), ""), t.startsWith("tcp") ? "tcp" : "udp"),
    ),
  );
  const sockets = tables.flat();
  const owners = inodeOwners(await processSockets(deps));
  const info = new Map<number, ProcessInfo>();
  for (const pid of new Set(owners.values())) {
    const [comm, cmdline] = await Promise.all([orEmpty(deps.readText(`/proc/${pid}/comm`), ""), orEmpty(deps.readText(`/proc/${pid}/cmdline`), "")]);
    info.set(pid, { process: comm.trim() || undefined, command: commandLine(cmdline) || undefined });
  }
  const joined = joinSockets(sockets, owners, (pid) => info.get(pid) ?? {});
  // Drop undefined fields so the JSON stays minimal.
  return { sockets: joined.map((s) => JSON.parse(JSON.stringify(s))) };
}

/** Only an agent inside a guest changes its machine's identity; one serving a test socket refuses. */
function reidentifyHere(deps: AgentDeps, params: unknown) {
  if (!deps.reidentify) throw new Error("this agent does not re-identify the machine it runs on (it serves a test socket, not a guest)");
  return reidentify(params, deps.reidentify);
}

/** Turns one request into one response; never throws. */
export function createHandler(deps: AgentDeps) {
  return async (req: AgentRequest): Promise<AgentResponse> => {
    try {
      if (!(AGENT_METHODS as readonly string[]).includes(req.method)) {
        return { id: req.id, ok: false, error: { message: `unknown method ${JSON.stringify(req.method)}` } };
      }
      const result =
        req.method === "hello"
          ? { version: PROTOCOL_VERSION, agent: deps.version }
          : req.method === "health"
            ? await collectHealth(deps)
            : req.method === "reidentify"
              ? await reidentifyHere(deps, req.params)
              : await collectPorts(deps);
      return { id: req.id, ok: true, result };
    } catch (err) {
      return { id: req.id, ok: false, error: { message: err instanceof Error ? err.message : String(err) } };
    }
  };
}

export type Handler = ReturnType<typeof createHandler>;

/** One host connection as the agent serves it: feed it bytes; close it when the host goes away. */
export interface AgentConnection {
  feed(chunk: Uint8Array | string): void;
  /** Kills the processes this connection's execs started. */
  close(): void;
}

/**
 * Serves one duplex stream: each request line gets one response line, exec frames go to
 * the connection's exec sessions; lines that are not requests are dropped (garbage on a
 * reattached serial port).
 */
export function serveConnection(handler: Handler, write: (data: string | Uint8Array) => void, passwd?: string): AgentConnection {
  const exec = new ExecSessions(write, passwd);
  const feed = frameSplitter(
    (line) => {
      const req = parseRequest(line);
      if (!req) return;
      void handler(req).then((res) => write(encodeLine(res)));
    },
    (frame) => exec.onFrame(frame),
  );
  return { feed, close: () => exec.closeAll() };
}

/** The request/response part of serveConnection, for callers without exec. */
export function lineServer(handler: Handler, write: (line: string) => void): (chunk: Uint8Array | string) => void {
  return serveConnection(handler, (d) => write(typeof d === "string" ? d : new TextDecoder().decode(d))).feed;
}
