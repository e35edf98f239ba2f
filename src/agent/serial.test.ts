import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "bun:test";
import { findSerialPort, serveSerial, type SerialPort } from "./serial.ts";
import { createHandler, type AgentDeps } from "./server.ts";

const deps: AgentDeps = {
  version: "v",
  readText: async (p) => (p === "/proc/uptime" ? "1.5 2\n" : "boot\n"),
  list: async () => [],
  link: async () => "",
  hostname: () => "g",
};

/** A scripted port: each read returns the next chunk ("" = host detached); writes are recorded. */
function scriptedPort(chunks: string[]) {
  const writes: string[] = [];
  let i = 0;
  const port: SerialPort = {
    read: async (buf) => {
      const c = new TextEncoder().encode(chunks[i++] ?? "");
      buf.set(c);
      return c.length;
    },
    write: async (t) => {
      writes.push(typeof t === "string" ? t : new TextDecoder().decode(t));
    },
    close: async () => {},
  };
  return { port, writes, done: () => i > chunks.length };
}

test("serial: partial lines left by a detached host are dropped, the next host is served", async () => {
  const s = scriptedPort([
    '{"id":1,"method":"hea',
    "", // host detached mid-line
    'lth"}\n{"id":2,"method":"health"}\n',
    "garbage\n",
    '{"id":3,"meth',
    'od":"health"}\n',
  ]);
  const sleeps: number[] = [];
  await serveSerial(s.port, createHandler(deps), {
    idleMs: 5,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    stopped: s.done,
  });
  await Bun.sleep(10);
  expect(s.writes.map((w) => JSON.parse(w).id)).toEqual([2, 3]);
  expect(sleeps).toEqual([5, 5]);
});

test("serial: a write that fails (host gone) does not stop the loop", async () => {
  const s = scriptedPort(['{"id":1,"method":"health"}\n', '{"id":2,"method":"health"}\n']);
  let calls = 0;
  const port = { ...s.port, write: async (t: string) => (calls++ === 0 ? Promise.reject(new Error("EIO")) : s.port.write(t)) };
  await serveSerial(port, createHandler(deps), { sleep: async () => {}, stopped: s.done });
  await Bun.sleep(10);
  expect(s.writes.map((w) => JSON.parse(w).id)).toEqual([2]);
});

test("findSerialPort: the vport whose sysfs name matches, or null", () => {
  const root = mkdtempSync(join(tmpdir(), "banger-vport-"));
  try {
    for (const [port, name] of [
      ["vport0p1", "org.qemu.guest_agent.0"],
      ["vport0p2", "org.banger.agent"],
    ]) {
      mkdirSync(`${root}/sys/${port}`, { recursive: true });
      writeFileSync(`${root}/sys/${port}/name`, `${name}\n`);
    }
    mkdirSync(`${root}/dev`);
    writeFileSync(`${root}/dev/vport0p2`, "");
    expect(findSerialPort("org.banger.agent", `${root}/sys`, `${root}/dev`)).toBe(`${root}/dev/vport0p2`);
    expect(findSerialPort("org.other", `${root}/sys`, `${root}/dev`)).toBeNull();
    expect(findSerialPort("org.banger.agent", `${root}/nope`, `${root}/dev`)).toBeNull();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
