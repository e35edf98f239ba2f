import { chmodSync, rmSync, writeFileSync } from "node:fs";
import { loadConfig } from "../config.ts";
import { BangerError } from "../errors.ts";
import { FileLock } from "../host/flock.ts";
import { resolvePaths, type Paths } from "../host/paths.ts";
import { handle, type Handlers } from "../rpc/handle.ts";
import { MAX_BODY_BYTES } from "../rpc/contract.ts";
import { BUILD_HEADER } from "../rpc/wire.ts";
import { openStore } from "../store/db.ts";
import { BUILD_ID, VERSION } from "../version.ts";
import type { DaemonStatus } from "../rpc/results.ts";
import { prepareRuntimeDir } from "../rpc/socket-trust.ts";
import { LOCK_HELD_LINE } from "../self.ts";
import { buildServices, type Services } from "./services.ts";
import { startExecServer } from "./exec-server.ts";

/** A timestamped line in the daemon log (stdout is the log file). */
export function log(msg: string) {
  process.stdout.write(`${new Date().toISOString()} ${msg}\n`);
}

/** What the running daemon knows about itself: for `daemon.status` and a clean stop. */
interface DaemonState {
  startedAt: Date;
  busy: number;
  stopping: boolean;
}

/** The daemon's own methods beside the services' handlers. */
function daemonHandlers(services: Services, paths: Paths, state: DaemonState, shutdown: (why: string) => Promise<void>): Handlers {
  return {
    ...services.handlers,
    "daemon.status": async (): Promise<DaemonStatus> => ({
      pid: process.pid,
      version: VERSION,
      buildId: BUILD_ID,
      startedAt: state.startedAt.toISOString(),
      uptimeS: Math.round((Date.now() - state.startedAt.getTime()) / 1000),
      busy: Math.max(0, state.busy - 1),
      socket: paths.socket,
      log: paths.daemonLog,
      vms: services.vmCount(),
      dns: services.dnsAddress,
      ...(services.dnsProblem ? { dnsProblem: services.dnsProblem } : {}),
    }),
    "daemon.stop": async () => {
      setTimeout(() => void shutdown("daemon stop"), 20);
      return { stopping: true };
    },
  };
}

/** The RPC socket (mode 0600): every request through rpc/handle.ts, refused while stopping. */
function serveRpc(paths: Paths, handlers: Handlers, state: DaemonState) {
  const deps = {
    handlers,
    logError: (err: unknown, method: string) => log(`error in ${method}: ${(err as Error)?.stack ?? err}`),
    track: { begin: () => state.busy++, end: () => state.busy-- },
  };
  const server = Bun.serve({
    unix: paths.socket,
    maxRequestBodySize: MAX_BODY_BYTES * 2,
    // No idle cut-off for long event streams (vm create, logs -f). Bun's types offer
    // idleTimeout only beside a port, hence the untyped spread.
    ...({ idleTimeout: 0 } as object),
    fetch: async (req) => {
      const res = state.stopping ? new Response("stopping", { status: 503 }) : await handle(req, deps);
      res.headers.set(BUILD_HEADER, BUILD_ID); // lets a client's one-call fast path know whom it reached
      return res;
    },
    error: (err) => {
      log(`serve error: ${err.stack ?? err}`);
      return new Response(JSON.stringify({ ok: false, error: new BangerError("internal", "daemon error").toJSON() }), { status: 500 });
    },
  });
  chmodSync(paths.socket, 0o600);
  return server;
}

/** Runs the daemon until a signal or `daemon stop`: the composition root. */
export async function runDaemon(paths: Paths = resolvePaths()): Promise<number> {
  prepareRuntimeDir(paths);
  const lock = FileLock.tryAcquire(paths.daemonLock);
  if (!lock) {
    log(LOCK_HELD_LINE);
    return 0;
  }
  // We hold the lock, so any socket file left behind is stale.
  rmSync(paths.socket, { force: true });
  const config = loadConfig(paths);
  const db = openStore(paths.dbFile);
  const state: DaemonState = { startedAt: new Date(), busy: 0, stopping: false };
  const services = await buildServices({ paths, config, db, log });

  const shutdown = async (why: string) => {
    if (state.stopping) return;
    state.stopping = true;
    log(`shutting down (${why})`);
    server.stop(true);
    execServer.close();
    rmSync(paths.execSocket, { force: true });
    await services.close().catch((err) => log(`close: ${(err as Error).message}`));
    db.close();
    rmSync(paths.socket, { force: true });
    rmSync(paths.daemonPidFile, { force: true });
    lock.release();
    process.exit(0);
  };

  const server = serveRpc(paths, daemonHandlers(services, paths, state, shutdown), state);
  const execServer = await startExecServer(paths.execSocket, services.agentFor, log);
  writeFileSync(paths.daemonPidFile, `${process.pid}\n`, { mode: 0o600 });
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  log(`banger daemon ${VERSION} (${BUILD_ID}) pid ${process.pid} listening on ${paths.socket}`);
  await new Promise(() => {});
  return 0;
}
