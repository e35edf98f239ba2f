import { afterAll, expect } from "bun:test";
import { openStoreReadOnly } from "../../src/store/db.ts";
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { METHODS } from "../../src/rpc/contract.ts";
import { alive, bangerBin, TestHome } from "../../src/testing/cli.ts";
import { testNeeds } from "../../src/testing/skip.ts";

const h = new TestHome();
afterAll(() => h.cleanup());

/** Every table's rows, as text: the store's logical content. */
function dump(path: string): string {
  const db = openStoreReadOnly(path)!;
  const tables = db.query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name").all();
  const out = tables.map((t) => `${t.name}:${JSON.stringify(db.query(`SELECT * FROM "${t.name}"`).all())}`).join("\n");
  db.close();
  return out;
}

function rand(n: number) {
  return Math.floor(Math.random() * n);
}

const methods = Object.keys(METHODS).filter((m) => m !== "daemon.stop");
const junkValues = [null, 0, -1, 1e308, "", "x".repeat(300), [], {}, [1, "a"], { a: { b: [] } }, true, "../../etc/passwd", "名前"];

function randomBody(i: number): string | Uint8Array {
  switch (i % 6) {
    case 0:
      return crypto.getRandomValues(new Uint8Array(rand(512)));
    case 1:
      return JSON.stringify({
        method: methods[rand(methods.length)],
        params: { [["ref", "refs", "name", "cpus", "x"][rand(5)]!]: junkValues[rand(junkValues.length)] },
      });
    case 2:
      return JSON.stringify({ method: `nope.${rand(1000)}`, params: {} });
    case 3:
      return `{"method":"vm.create","params":${"[".repeat(rand(2000))}`;
    case 4: {
      // Never a plain object or null here: `{}` is valid input for some methods (a build, a list).
      const notObjects = junkValues.filter((v) => v === null || Array.isArray(v) || typeof v !== "object").filter((v) => v !== null);
      return JSON.stringify({ method: methods[rand(methods.length)], params: notObjects[rand(notObjects.length)] });
    }
    default:
      return JSON.stringify({ method: "vm.show", params: { ref: "y".repeat(rand(3) === 0 ? 3 * 1024 * 1024 : 10) } });
  }
}

function rawGarbage(socket: string, bytes: Uint8Array): Promise<void> {
  return new Promise((resolve) => {
    const s = connect(socket, () => s.end(bytes));
    s.on("error", () => resolve());
    s.on("close", () => resolve());
    s.setTimeout(150, () => s.destroy());
  });
}

testNeeds(
  "200 random and malformed requests leave the daemon up and the store unchanged",
  [[existsSync(bangerBin), "dist/banger not built"]],
  async () => {
    const first = await h.run(["daemon", "status", "--json"]);
    const pid = JSON.parse(first.stdout).pid;
    const before = dump(h.paths.dbFile);
    let answered = 0;
    for (let i = 0; i < 200; i++) {
      if (i % 10 === 9) {
        await rawGarbage(h.paths.socket, crypto.getRandomValues(new Uint8Array(rand(4096) + 1)));
        continue;
      }
      const body = randomBody(i);
      const res = await fetch("http://banger/rpc", { method: "POST", unix: h.paths.socket, body } as RequestInit).catch(() => null);
      if (!res) continue;
      const text = await res.text();
      if (res.status === 413) continue;
      const env = JSON.parse(text);
      if (env.ok) throw new Error(`accepted: ${String(body).slice(0, 200)} -> ${JSON.stringify(env).slice(0, 100)}`);
      expect(["invalid_argument", "not_found", "not_available"]).toContain(env.error.code);
      answered++;
    }
    expect(answered).toBeGreaterThan(150);
    expect(alive(pid)).toBe(true);
    const after = await h.run(["daemon", "status", "--json"]);
    expect(JSON.parse(after.stdout).pid).toBe(pid);
    expect(dump(h.paths.dbFile)).toBe(before);
  },
  60_000,
);
