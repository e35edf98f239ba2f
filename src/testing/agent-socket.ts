/** A real agent handler served on a unix socket: the guest's code paths, minus the VM. */
import { createServer, type Server } from "node:net";
import { AgentClient, unixConnector } from "../agent/client.ts";
import { createHandler, type Handler, procDeps, serveConnection } from "../agent/server.ts";

/** Listens on `path` with `handler` (a test agent by default) and returns the server and a client for it. */
export async function agentOnSocket(path: string, handler: Handler = createHandler(procDeps("test"))): Promise<{ server: Server; client: AgentClient }> {
  const server = createServer((conn) => {
    const served = serveConnection(handler, (d) => void conn.write(d));
    conn.on("data", (c: Uint8Array) => served.feed(c));
    conn.on("close", () => served.close());
    conn.on("error", () => conn.destroy());
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { server, client: new AgentClient(unixConnector(path)) };
}
