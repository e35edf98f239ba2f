/** The raw API half of the driver contract: Firecracker's request rules, spoken to directly over its socket. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadApiSpec, type SchemaNode } from "./fake-firecracker/schema.ts";
import type { ContractOptions } from "./driver-contract.ts";
import { waitForExit } from "../vm/drivers/process.ts";

/** A VMM process started by hand, with nothing configured. */
interface RawVmm {
  dir: string;
  sock: string;
  proc: ReturnType<typeof Bun.spawn>;
  call(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
}

async function spawnRaw(bin: string[], extra: string[] = []): Promise<RawVmm> {
  const dir = mkdtempSync(join(tmpdir(), "banger-fcapi-"));
  const sock = join(dir, "fc.sock");
  const proc = Bun.spawn([...bin, "--api-sock", sock, "--id", "contract-api", ...extra], { stdout: "ignore", stderr: "ignore" });
  const call = async (method: string, path: string, body?: unknown) => {
    const text = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
    const res = await fetch(`http://localhost${path}`, { unix: sock, method, body: text } as RequestInit);
    const raw = await res.text();
    return { status: res.status, body: raw ? JSON.parse(raw) : null };
  };
  const stop = async () => {
    proc.kill("SIGKILL");
    await waitForExit(proc.pid, 2000);
    rmSync(dir, { recursive: true, force: true });
  };
  // The socket file appears at bind, a moment before listen; like firecracker-go-sdk, wait for an answer.
  const deadline = Date.now() + 3000;
  for (;;) {
    if (existsSync(sock) && (await call("GET", "/").catch(() => null))) break;
    if (Date.now() > deadline || proc.exitCode !== null) {
      await stop();
      throw new Error(`${bin.join(" ")} did not serve ${sock} (exit ${proc.exitCode})`);
    }
    await Bun.sleep(10);
  }
  return { dir, sock, proc, call, stop };
}

const BEFORE = "The requested operation is not supported before starting the microVM.";
const AFTER = "The requested operation is not supported after starting the microVM.";
const DESERIALIZE = "An error occurred when deserializing the json body of a request: ";

type ApiOptions = ContractOptions & { bin: string[] };

/** Registers the raw API rule tests (inside driverContract's describe). */
export function apiRulesContract(opts: ApiOptions): void {
  socketTakenTest(opts);
  preBootRulesTest(opts);
  postBootRulesTest(opts);
  specBodiesSuite(opts);
}

function socketTakenTest(opts: ApiOptions): void {
  test("refuses an existing API socket path with Firecracker's message", async () => {
    const dir = mkdtempSync(join(tmpdir(), "banger-fcapi-"));
    const sock = join(dir, "fc.sock");
    writeFileSync(sock, "");
    const proc = Bun.spawn([...opts.bin, "--api-sock", sock, "--id", "taken"], { stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]).finally(() =>
      rmSync(dir, { recursive: true, force: true }),
    );
    expect(code).not.toBe(0);
    expect(out + err).toContain(`Failed to open the API socket at: ${sock}. Check that it is not already used.`);
  });
}

function preBootRulesTest(opts: ApiOptions): void {
  test("pre-boot rules: defaults, refusals and Firecracker's messages", async () => {
    const vmm = await spawnRaw(opts.bin);
    try {
      const fault = async (m: string, p: string, b?: unknown) => (await vmm.call(m, p, b)).body?.fault_message;
      expect((await vmm.call("GET", "/")).body).toEqual({ id: "contract-api", state: "Not started", vmm_version: "1.16.1", app_name: "Firecracker" });
      expect((await vmm.call("GET", "/version")).body).toEqual({ firecracker_version: "1.16.1" });
      expect((await vmm.call("GET", "/machine-config")).body).toMatchObject({ vcpu_count: 1, mem_size_mib: 128, smt: false });
      expect(await fault("GET", "/foo")).toBe("Invalid request method and/or path: GET /foo.");
      expect(await fault("PATCH", "/vm", { state: "Paused" })).toBe(BEFORE);
      expect(await fault("PUT", "/actions", { action_type: "SendCtrlAltDel" })).toBe(BEFORE);
      expect(await fault("PUT", "/actions", { action_type: "InstanceStart" })).toBe("Start microvm error: Cannot start microvm without kernel configuration.");
      const drive = { drive_id: "other", path_on_host: await opts.rootfs(), is_root_device: true, is_read_only: false };
      expect(await fault("PUT", "/drives/rootfs", drive)).toBe("The id from the path does not match the id from the body!");
      expect(await fault("PUT", "/drives/bad-id", { ...drive, drive_id: "bad-id" })).toContain("alphanumeric characters and underscores");
      expect(await fault("PATCH", "/drives/rootfs", { drive_id: "rootfs", path_on_host: drive.path_on_host })).toBe(BEFORE);
      expect(await fault("PUT", "/boot-source", "")).toBe("Empty PUT request.");
      expect(await fault("PUT", "/boot-source", { kernel_image_path: join(vmm.dir, "missing") })).toBe(
        "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)",
      );
      expect(await fault("PUT", "/network-interfaces/eth0", { iface_id: "eth0", host_dev_name: "lo" })).toContain("Open tap device failed");
      const metrics = { metrics_path: join(vmm.dir, "m.json") };
      writeFileSync(metrics.metrics_path, "");
      expect((await vmm.call("PUT", "/metrics", metrics)).status).toBe(204);
      expect(await fault("PUT", "/metrics", metrics)).toContain("Reinitialization of metrics not allowed.");
      const uds = join(vmm.dir, "v.sock");
      writeFileSync(uds, "");
      expect((await vmm.call("PUT", "/vsock", { guest_cid: 3, uds_path: uds })).status).toBe(400);
    } finally {
      await vmm.stop();
    }
  });
}

function postBootRulesTest(opts: ApiOptions): void {
  test("post-boot rules: pre-boot calls refused, InstanceStart once, pause and resume, FlushMetrics", async () => {
    const vmm = await spawnRaw(opts.bin);
    try {
      const put = (p: string, b: unknown) => vmm.call("PUT", p, b);
      writeFileSync(join(vmm.dir, "m.json"), "");
      expect((await put("/metrics", { metrics_path: join(vmm.dir, "m.json") })).status).toBe(204);
      expect((await put("/boot-source", { kernel_image_path: await opts.kernel(), boot_args: "console=ttyS0 reboot=k panic=1" })).status).toBe(204);
      const drive = { drive_id: "rootfs", path_on_host: await opts.rootfs(), is_root_device: true, is_read_only: false };
      expect((await put("/drives/rootfs", drive)).status).toBe(204);
      expect((await put("/actions", { action_type: "InstanceStart" })).status).toBe(204);
      expect((await vmm.call("GET", "/")).body.state).toBe("Running");
      expect((await put("/actions", { action_type: "InstanceStart" })).body.fault_message).toBe(AFTER);
      expect((await put("/machine-config", { vcpu_count: 2, mem_size_mib: 256 })).body.fault_message).toBe(AFTER);
      expect((await put("/boot-source", { kernel_image_path: await opts.kernel() })).body.fault_message).toBe(AFTER);
      expect((await put("/metrics", { metrics_path: join(vmm.dir, "m.json") })).body.fault_message).toBe(AFTER);
      expect((await vmm.call("PATCH", "/vm", { state: "Paused" })).status).toBe(204);
      expect((await vmm.call("GET", "/")).body.state).toBe("Paused");
      expect((await vmm.call("PATCH", "/vm", { state: "Resumed" })).status).toBe(204);
      expect((await vmm.call("GET", "/")).body.state).toBe("Running");
      expect((await put("/actions", { action_type: "FlushMetrics" })).status).toBe(204);
      expect((await vmm.call("GET", "/vm/config")).body.drives[0].drive_id).toBe("rootfs");
      // PATCH /drives with the same file is how a grown disk is announced; a bad one is refused.
      const patch = (id: string, b: Record<string, unknown>) => vmm.call("PATCH", `/drives/${id}`, { drive_id: id, ...b });
      expect((await patch("rootfs", { path_on_host: drive.path_on_host })).status).toBe(204);
      for (const bad of [
        patch("nosuch", { path_on_host: drive.path_on_host }),
        patch("rootfs", {}),
        patch("rootfs", { path_on_host: join(vmm.dir, "missing") }),
      ]) {
        const r = await bad;
        expect(r.status).toBe(400);
        expect(r.body.fault_message).toStartWith("Unable to patch the block device: ");
      }
      expect((await vmm.call("GET", "/vm/config")).body.drives[0].path_on_host).toBe(drive.path_on_host);
    } finally {
      await vmm.stop();
    }
  });
}

function specBodiesSuite(opts: ApiOptions): void {
  describe("request bodies drawn from the API spec are refused with serde's words", () => {
    let vmm: RawVmm;
    beforeAll(async () => void (vmm = await spawnRaw(opts.bin)));
    afterAll(async () => vmm && (await vmm.stop()));
    const cases = opts.skip ? [] : specCases();
    test.each(cases)("%s %s: %s", async (method, path, _what, body, expected) => {
      const res = await vmm.call(method, path, body);
      expect(res.status).toBe(400);
      expect(res.body.fault_message.startsWith(DESERIALIZE)).toBe(true);
      expect(res.body.fault_message).toContain(expected);
    });
  });
}

// Endpoints banger uses, with the id their path parameter takes.
const TABLE: Array<[string, string, string | null]> = [
  ["PUT", "/boot-source", null],
  ["PUT", "/drives/{drive_id}", "rootfs"],
  ["PUT", "/logger", null],
  ["PUT", "/machine-config", null],
  ["PUT", "/metrics", null],
  ["PUT", "/network-interfaces/{iface_id}", "eth0"],
  ["PUT", "/vsock", null],
  ["PUT", "/actions", null],
  ["PATCH", "/vm", null],
  ["PATCH", "/drives/{drive_id}", "rootfs"],
];

/** [method, path, what, body, expected fragment] for missing, mistyped and unknown fields. */
export function specCases(): Array<[string, string, string, unknown, string]> {
  const spec = loadApiSpec();
  const out: Array<[string, string, string, unknown, string]> = [];
  for (const [method, template, id] of TABLE) {
    const defName = spec.operations.get(`${method} ${template}`)!;
    const def = spec.definitions[defName]!;
    const path = id ? template.replace(/\{.*\}/, id) : template;
    const valid = Object.fromEntries((def.required ?? []).map((k) => [k, sample(spec.definitions, k, def.properties![k]!, id)]));
    for (const k of def.required ?? []) {
      const { [k]: _gone, ...body } = valid;
      out.push([method, path, `missing ${k}`, body, `missing field \`${k}\``]);
    }
    for (const [k, prop] of Object.entries(def.properties ?? {})) {
      const wrong = wrongType(spec.definitions, prop);
      if (wrong !== undefined) out.push([method, path, `${k} of the wrong type`, { ...valid, [k]: wrong }, "invalid type"]);
    }
    out.push([method, path, "unknown field", { ...valid, bogus_field: 1 }, "unknown field `bogus_field`"]);
  }
  return out;
}

function resolveNode(defs: Record<string, SchemaNode>, node: SchemaNode): SchemaNode {
  return node.$ref ? (defs[node.$ref.replace("#/definitions/", "")] ?? {}) : node;
}

function sample(defs: Record<string, SchemaNode>, key: string, node: SchemaNode, id: string | null): unknown {
  const n = resolveNode(defs, node);
  if (n.enum) return n.enum[0];
  if (key.endsWith("_id") && id) return id;
  if (n.type === "integer") return n.minimum ?? 1;
  if (n.type === "boolean") return false;
  if (n.type === "object") return {};
  return "sample";
}

function wrongType(defs: Record<string, SchemaNode>, node: SchemaNode): unknown {
  const n = resolveNode(defs, node);
  if (n.enum || n.type === "string") return 5;
  if (n.type === "integer") return "5";
  if (n.type === "boolean") return "yes";
  if (n.type === "object") return 5;
  return undefined;
}
