import { describe, expect, test } from "bun:test";
import { METHODS, type Method } from "./contract.ts";
import { handle, type HandleDeps } from "./handle.ts";

const errors: unknown[] = [];
const deps: HandleDeps = {
  handlers: new Proxy({}, { get: () => async (params: unknown) => ({ echoed: params }) }),
  logError: (err) => errors.push(err),
};
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const rpc = (body: unknown, d: HandleDeps = deps): Promise<any> =>
  handle(new Request("http://banger/rpc", { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) }), d).then((r) => r.json());

/** A value of the wrong type for any field. */
const wrong = (x: unknown) => (typeof x === "string" ? 42 : { nested: true });

describe("handle()", () => {
  test("a valid call reaches its handler and comes back in the envelope", async () => {
    expect(await rpc({ method: "vm.show", params: { ref: "web" } })).toEqual({ ok: true, result: { echoed: { ref: "web" } } });
  });

  test("every method rejects malformed input with invalid_argument naming the field", async () => {
    const samples: Record<string, Record<string, unknown>> = {
      refs: { refs: ["a"] },
      ref: { ref: "a" },
      name: { name: "a" },
      path: { path: "/x" },
      source: { source: "/x" },
      from: { from: "/x" },
      to: { to: "/x" },
    };
    for (const method of Object.keys(METHODS) as Method[]) {
      const schema = METHODS[method] as unknown as { entries: Record<string, unknown> };
      const fields = Object.keys(schema.entries);
      const unknown = await rpc({ method, params: { bogus_field: 1 } });
      expect(unknown.ok).toBe(false);
      expect(unknown.error.code).toBe("invalid_argument");
      expect(unknown.error.message).toContain("bogus_field");
      for (const field of fields) {
        const base = Object.assign({}, ...fields.map((f) => samples[f] ?? {}));
        const res = await rpc({ method, params: { ...base, [field]: wrong(base[field]) } });
        if (res.ok) throw new Error(`${method}.${field} accepted a wrong type`);
        expect(res.error.code).toBe("invalid_argument");
        expect(res.error.message).toContain(`${method}: ${field}`);
      }
    }
  });

  test("bad JSON, non-objects, unknown methods and huge bodies are invalid_argument", async () => {
    for (const body of [
      "{",
      "[]",
      "null",
      "42",
      JSON.stringify({ method: "nope" }),
      JSON.stringify({ method: "vm.list", params: "x" }),
      JSON.stringify({ method: "vm.stats", params: [] }),
      JSON.stringify({ method: "vm.list", params: null }),
    ]) {
      const res = await rpc(body);
      expect(res.ok).toBe(false);
      expect(res.error.code).toBe("invalid_argument");
    }
    const huge = await rpc(JSON.stringify({ method: "vm.show", params: { ref: "x".repeat(2 * 1024 * 1024) } }));
    expect(huge.error.message).toContain("too large");
  });

  test("unknown throws become internal, are logged, and carry no stack", async () => {
    const d: HandleDeps = {
      handlers: {
        "vm.list": async () => {
          throw new Error("boom at /secret/path");
        },
      },
      logError: (e) => errors.push(e),
    };
    const res = await rpc({ method: "vm.list", params: {} }, d);
    expect(res.error.code).toBe("internal");
    expect(JSON.stringify(res)).not.toMatch(/\\n\s+at /);
    expect(errors.length).toBeGreaterThan(0);
  });

  test("a method with no handler yet says not_available", async () => {
    const res = await rpc({ method: "vm.list", params: {} }, { handlers: {}, logError: () => {} });
    expect(res.error.code).toBe("not_available");
  });

  test("streaming methods send events then the envelope as JSON lines", async () => {
    const d: HandleDeps = {
      handlers: {
        "kernel.build": async (_p, ctx) => {
          ctx.progress({ stage: "boot", status: "start" });
          return { id: "x" };
        },
      },
      logError: () => {},
    };
    const res = await handle(new Request("http://banger/rpc", { method: "POST", body: JSON.stringify({ method: "kernel.build", params: {} }) }), d);
    const lines = (await res.text())
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines).toEqual([{ event: { stage: "boot", status: "start" } }, { ok: true, result: { id: "x" } }]);
  });

  test("a quiet streaming handler still sends keep-alive blank lines, which the client skips", async () => {
    const d: HandleDeps = {
      handlers: { "kernel.build": async () => (await Bun.sleep(130), { name: "k" }) },
      logError: () => {},
      heartbeatMs: 20,
    };
    const res = await handle(new Request("http://banger/rpc", { method: "POST", body: JSON.stringify({ method: "kernel.build", params: {} }) }), d);
    const text = await res.text();
    expect(text.match(/^$/gm)!.length).toBeGreaterThanOrEqual(3);
    expect(text.trim()).toBe(JSON.stringify({ ok: true, result: { name: "k" } }));
  });
});
