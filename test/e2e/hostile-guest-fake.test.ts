import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { call } from "../../src/rpc/client.ts";
import { bangerBin, type TestHome } from "../../src/testing/cli.ts";
import { fakeFirecrackerHome } from "../../src/testing/fake-env.ts";
import { hasBin, isRoot, testNeeds } from "../../src/testing/skip.ts";

/**
 * A hostile guest against the fake Firecracker: its agent answers with escape sequences, a
 * foreign `name` and 100,000 ports, and floods the console. Output keeps no ESC byte, the
 * name is banger's, the ports are capped, console.log stays within console_log_max, and the
 * daemon keeps answering throughout.
 */
const needs: Array<[boolean, string]> = [
  [existsSync(bangerBin), "dist/banger not built"],
  [isRoot, "needs root (bridge and TAPs)"],
  [hasBin("nft") || hasBin("iptables"), "needs nftables or iptables"],
];

const OSC52 = "\x1b]52;c;cHduZWQ=\x07";
const CONSOLE_MAX = 256 * 1024;

/** The hostile agent: health with escapes and a `name`, 100,000 ports, and an endless console. */
const AGENT = `
import { createServer } from "node:net";
const path = process.argv[process.argv.indexOf("--unix") + 1];
const OSC52 = ${JSON.stringify(OSC52)};
const health = { version: "evil" + OSC52, uptime_s: 3, boot_id: "\\x1b[2J\\x1b[31mboot", hostname: "h\\x9b0m", name: "root-vm" };
const ports = Array.from({ length: 100000 }, (_, i) => ({ proto: "tcp", address: "*", port: 1 + (i % 9999) }));
const answer = (req) =>
  req.method === "health" ? { id: req.id, ok: true, result: health }
  : req.method === "ports" ? { id: req.id, ok: true, result: { sockets: ports } }
  : { id: req.id, ok: false, error: { message: "no " + req.method + OSC52 } };
createServer((sock) => {
  sock.on("error", () => {});
  let buf = "";
  sock.on("data", (d) => {
    buf += d;
    for (let nl = buf.indexOf("\\n"); nl >= 0; nl = buf.indexOf("\\n")) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try { sock.write(JSON.stringify(answer(JSON.parse(line))) + "\\n"); } catch {}
    }
  });
}).listen(path);
// The console: stdout is the VMM's console log. About 4 MiB/s of escapes and text, forever.
const burst = (OSC52 + " flood \\x1b[31mred\\x1b[0m\\n").repeat(600);
setInterval(() => process.stdout.write(burst), 5);
`;

let h: TestHome & { teardownNet(): Promise<void> };
const scratch = mkdtempSync(join(tmpdir(), "banger-hostile-"));
const T = 180_000;

beforeAll(async () => {
  if (!needs.every(([ok]) => ok)) return;
  const agent = join(scratch, "hostile-agent.ts");
  writeFileSync(agent, AGENT);
  h = await fakeFirecrackerHome({ taps: 2, env: { FAKE_FC_AGENT_CMD: `${process.execPath} ${agent}` }, config: `console_log_max = "256K"\n` });
}, T);
afterAll(async () => {
  if (h) {
    await h.run(["vm", "delete", "--force", "evil"]);
    await h.teardownNet();
    await h.cleanup();
  }
  rmSync(scratch, { recursive: true, force: true });
});

/** Polls `vm.list` over the socket while `work` runs; returns the slowest answer in ms. */
async function slowestDuring<T>(work: Promise<T>): Promise<{ result: T; slowestMs: number }> {
  let done = false;
  let slowestMs = 0;
  const poller = (async () => {
    while (!done) {
      const t = performance.now();
      await call(h.paths.socket, "vm.list", {});
      slowestMs = Math.max(slowestMs, performance.now() - t);
      await Bun.sleep(50);
    }
  })();
  const result = await work;
  done = true;
  await poller;
  return { result, slowestMs };
}

describe("a hostile guest (fake Firecracker, hostile agent)", () => {
  testNeeds(
    "escapes, a foreign name, 100,000 ports and an endless console are contained",
    needs,
    async () => {
      const created = await h.run(["vm", "create", "--name", "evil"]);
      expect(created.code).toBe(0);
      const consoleLog = join(JSON.parse((await h.run(["vm", "show", "evil", "--json"])).stdout).dir, "console.log");

      const health = await h.run(["vm", "health", "evil"]);
      expect(health.code).toBe(0);
      expect(health.stdout).toStartWith("evil: agent evil healthy");
      expect(health.stdout + health.stderr).not.toMatch(/[\x1b\x07\x9b]/);
      const healthJson = JSON.parse((await h.run(["vm", "health", "evil", "--json"])).stdout);
      expect(healthJson.name).toBe("evil");
      expect(healthJson.version).toBe(`evil${OSC52}`); // --json keeps the exact string

      const ports = await slowestDuring(h.run(["vm", "ports", "evil", "--json"]));
      expect(ports.result.code).toBe(0);
      const view = JSON.parse(ports.result.stdout);
      expect(view.ports.length).toBeLessThanOrEqual(1024);
      expect(view.dropped).toBe(100_000 - 1024);
      const table = await h.run(["vm", "ports", "evil"]);
      expect(table.stdout).toContain(`${100_000 - 1024} more listeners not shown`);
      console.log(`vm ports with 100,000 listed: slowest vm.list meanwhile ${Math.round(ports.slowestMs)} ms`);
      expect(ports.slowestMs).toBeLessThan(1000);

      // The console has been flooded since boot: sample its size for a while.
      let most = 0;
      for (let i = 0; i < 40; i++) {
        most = Math.max(most, statSync(consoleLog).size);
        await Bun.sleep(50);
      }
      console.log(`console.log peaked at ${most} bytes (cap ${CONSOLE_MAX}); console.log.1 is ${statSync(`${consoleLog}.1`).size} bytes`);
      expect(most).toBeLessThanOrEqual(CONSOLE_MAX);
      expect(statSync(`${consoleLog}.1`).size).toBeLessThanOrEqual(CONSOLE_MAX);

      const logs = await h.run(["vm", "logs", "evil", "--lines", "50"]);
      expect(logs.code).toBe(0);
      expect(logs.stdout).toContain("flood red");
      expect(logs.stdout).not.toMatch(/[\x1b\x07\x9b]/);
    },
    T,
  );
});
