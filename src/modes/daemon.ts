/**
 * The daemon mode: `banger daemon run` (started by the client on first use). The wiring, the
 * socket servers and the RPC handlers live in `src/daemon/`.
 */
export { log, runDaemon } from "../daemon/serve.ts";
