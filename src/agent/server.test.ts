import { expect, test } from "bun:test";
import { collectHealth, collectPorts, createHandler, lineServer, type AgentDeps } from "./server.ts";

/** A fake /proc: a dual-stack web server with a worker, and a socket whose owner is gone. */
function fakeProc(): AgentDeps {
  const files: Record<string, string> = {
    "/proc/uptime": "12.34 20.00\n",
    "/proc/sys/kernel/random/boot_id": "0d5c1a5e-0000-4000-8000-000000000001\n",
    "/proc/net/tcp": "hdr\n 0: 00000000:1F90 00000000:0000 0A 0:0 0:0 0 0 0 101 1\n",
    "/proc/net/tcp6": "hdr\n 0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 102 1\n",
    "/proc/net/udp": "hdr\n 0: 0100007F:0035 00000000:0000 07 0:0 0:0 0 0 0 103 2\n",
    "/proc/10/comm": "python3\n",
    "/proc/10/cmdline": "python3\0-m\0http.server\x008080\0",
    "/proc/11/comm": "python3\n",
    "/proc/11/cmdline": "python3\0worker\0",
  };
  const dirs: Record<string, string[]> = { "/proc": ["10", "11", "12", "self", "net"], "/proc/10/fd": ["3", "4"], "/proc/11/fd": ["3"] };
  const links: Record<string, string> = { "/proc/10/fd/3": "socket:[101]", "/proc/10/fd/4": "socket:[102]", "/proc/11/fd/3": "socket:[101]" };
  const missing = (p: string) => Promise.reject(Object.assign(new Error(`ENOENT ${p}`), { code: "ENOENT" }));
  return {
    version: "1.2.3",
    readText: async (p) => files[p] ?? missing(p),
    list: async (d) => dirs[d] ?? missing(d),
    link: async (p) => links[p] ?? missing(p),
    hostname: () => "t1",
  };
}

test("health reads uptime and boot id", async () => {
  expect(await collectHealth(fakeProc())).toEqual({
    version: "1.2.3",
    uptime_s: 12.34,
    boot_id: "0d5c1a5e-0000-4000-8000-000000000001",
    hostname: "t1",
  });
});

test("ports joins /proc/net with processes; a missing udp6 table or vanished pid is fine", async () => {
  const { sockets } = await collectPorts(fakeProc());
  const web = { pid: 10, process: "python3", command: "python3 -m http.server 8080" };
  expect(sockets).toEqual([
    { proto: "tcp", address: "0.0.0.0", port: 8080, ...web },
    { proto: "tcp", address: "::", port: 8080, ...web },
    { proto: "udp", address: "127.0.0.1", port: 53 },
  ]);
});

test("the handler answers unknown methods with an error, never throws", async () => {
  const handle = createHandler(fakeProc());
  expect(await handle({ id: 1, method: "reboot" })).toEqual({ id: 1, ok: false, error: { message: 'unknown method "reboot"' } });
  const broken = createHandler({ ...fakeProc(), readText: () => Promise.reject(new Error("EIO")) });
  expect(await broken({ id: 2, method: "health" })).toEqual({ id: 2, ok: false, error: { message: "EIO" } });
});

test("lineServer answers each request line and drops garbage", async () => {
  const out: string[] = [];
  const feed = lineServer(createHandler(fakeProc()), (l) => out.push(l));
  feed('noise\n{"id":1,"method":"health"}\n{"id":2,');
  feed('"method":"health"}\n');
  await Bun.sleep(10);
  expect(out.map((l) => JSON.parse(l).id).sort()).toEqual([1, 2]);
  expect(out.every((l) => l.endsWith("\n"))).toBe(true);
});
