import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rejection } from "../testing/errors.ts";
import { call, DaemonUnreachable } from "./client.ts";
import type { ProgressEvent } from "./contract.ts";
import { handle, type HandleDeps } from "./handle.ts";

const dir = mkdtempSync(join(tmpdir(), "banger-rpc-client-"));
const socket = join(dir, "rpc.sock");
const deps: HandleDeps = {
  handlers: {
    "kernel.build": async (_p, ctx) => {
      ctx.progress({ stage: "compile", status: "start" });
      await Bun.sleep(120);
      return { name: "built" };
    },
    "vm.show": async () => {
      throw new Error("boom");
    },
  },
  logError: () => {},
  heartbeatMs: 15,
};
const server = Bun.serve({ unix: socket, fetch: (req) => handle(req, deps) });
afterAll(() => {
  server.stop(true);
  rmSync(dir, { recursive: true, force: true });
});

test("a streaming call hands over events, skips keep-alive lines and returns the result", async () => {
  const events: ProgressEvent[] = [];
  expect(await call(socket, "kernel.build", {}, { onEvent: (e) => events.push(e) })).toEqual({ name: "built" });
  expect(events).toEqual([{ stage: "compile", status: "start" }]);
});

test("an error answer becomes a BangerError with its code, and no stack", async () => {
  const e = await rejection(call(socket, "vm.show", { ref: "x" }));
  expect(e.code).toBe("internal");
  expect(e.message).toBe("boom");
  expect(JSON.stringify(e.toJSON())).not.toContain("client.test.ts");
});

test("nothing listening is DaemonUnreachable, so the CLI can start a daemon", async () => {
  expect(call(join(dir, "none.sock"), "vm.list")).rejects.toBeInstanceOf(DaemonUnreachable);
});
