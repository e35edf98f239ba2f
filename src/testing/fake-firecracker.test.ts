import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ArgError, parseArgs } from "./fake-firecracker/cli.ts";
import { answer } from "./fake-firecracker/echo-agent.ts";
import { formatReply, parseRequest } from "./fake-firecracker/http.ts";
import { loadApiSpec, matchOperation, validateBody } from "./fake-firecracker/schema.ts";
import { parseConnect } from "./fake-firecracker/vsock.ts";
import { projectRoot } from "./skip.ts";
import { findByArgs, isAlive, waitForExit } from "../vm/drivers/process.ts";

const entry = join(projectRoot, "src/testing/fake-firecracker.ts");
const spec = loadApiSpec();

describe("schema validation follows serde", () => {
  const cases: Array<[string, string, string | null]> = [
    ["BootSource", '{"kernel_image_path":"/k"}', null],
    ["BootSource", '{"boot_args":"x"}', "missing field `kernel_image_path` at line 1 column 17"],
    [
      "BootSource",
      '{"kernel_image_path":"/k","x":1}',
      "unknown field `x`, expected one of `boot_args`, `initrd_path`, `kernel_image_path` at line 1 column 29",
    ],
    ["MachineConfiguration", '{"vcpu_count":"2","mem_size_mib":1}', 'invalid type: string "2", expected u8 at line 1 column 17'],
    ["MachineConfiguration", '{"vcpu_count":-1,"mem_size_mib":1}', "invalid value: integer `-1`, expected u8 at line 1 column 16"],
    ["Logger", '{"level":"Loud"}', "unknown variant `Loud`, expected one of `Error`, `Warning`, `Info`, `Debug`, `Trace`, `Off` at line 1 column 15"],
    ["Vm", '{"state":"Stopped"}', "unknown variant `Stopped`, expected `Paused` or `Resumed` at line 1 column 18"],
    ["Drive", '{"drive_id":"r","is_root_device":"yes"}', 'invalid type: string "yes", expected a boolean at line 1 column 38'],
    ["Drive", '{"drive_id":"r","is_root_device":true,"rate_limiter":{"ops":{"size":1}}}', "missing field `refill_time`"],
    ["Vsock", "[1]", "invalid type: sequence, expected struct Vsock"],
    ["Vsock", "{", "expected value at line 1 column 1"],
  ];
  test.each(cases)("%s %s", (def, body, want) => {
    const got = validateBody(spec, def, body);
    if (want === null) expect(got).toBeNull();
    else expect(got).toContain(want);
  });

  test("routes come from the spec's paths", () => {
    expect(matchOperation(spec, "PUT", "/drives/rootfs")).toEqual({ op: "PUT /drives/{drive_id}", body: "Drive", param: "rootfs" });
    expect(matchOperation(spec, "GET", "/")).toEqual({ op: "GET /", body: null });
    expect(matchOperation(spec, "DELETE", "/")).toBeNull();
    expect(matchOperation(spec, "PUT", "/drives/")).toBeNull();
  });
});

describe("HTTP framing is micro-http's", () => {
  test("204 has no reason phrase and Firecracker's headers", () => {
    expect(formatReply({ status: 204 })).toBe("HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n");
    expect(formatReply({ status: 400, body: { fault_message: "x" } })).toContain("Content-Type: application/json\r\nContent-Length: 21\r\n\r\n");
  });
  test("requests parse with bodies, wait for more bytes, and refuse oversized bodies", () => {
    const req = Buffer.from('PUT /vm HTTP/1.1\r\nContent-Length: 18\r\n\r\n{"state":"Paused"}GET');
    const parsed = parseRequest(req);
    expect(parsed && "request" in parsed && parsed.request).toEqual({ method: "PUT", path: "/vm", body: '{"state":"Paused"}' });
    expect(parseRequest(Buffer.from("PUT /vm HTTP/1.1\r\nContent-Length: 5\r\n\r\n{"))).toBeNull();
    expect(parseRequest(Buffer.from("PUT /vm HTTP/1.1\r\nContent-Length: 60000\r\n\r\n"))).toMatchObject({ error: expect.stringContaining("51200") });
  });
});

test("CLI takes Firecracker's flags and the fake's own", () => {
  const a = parseArgs(["--api-sock", "/s", "--id", "vm-1", "--no-seccomp", "--agent-delay-ms=250", "--ignore-ctrl-alt-del"]);
  expect(a).toMatchObject({ apiSock: "/s", id: "vm-1", noSeccomp: true, agentDelayMs: 250, ignoreCtrlAltDel: true });
  expect(parseArgs([]).apiSock).toBe("/run/firecracker.socket");
  expect(() => parseArgs(["--bogus"])).toThrow(ArgError);
  expect(() => parseArgs(["--id", "bad_id"])).toThrow("Invalid instance ID");
});

test("vsock CONNECT lines and the echo agent", () => {
  expect(parseConnect("CONNECT 1024")).toBe(1024);
  expect(parseConnect("connect 52")).toBe(52);
  expect(parseConnect("CONNECT x")).toBeNull();
  expect(JSON.parse(answer('{"id":3,"method":"health"}'))).toMatchObject({ id: 3, ok: true });
  expect(JSON.parse(answer("nope")).ok).toBe(false);
});

describe("the fake process", () => {
  const started: Array<{ pid: number; dir: string }> = [];
  afterEach(async () => {
    for (const { pid, dir } of started.splice(0)) {
      if (isAlive(pid)) process.kill(pid, "SIGKILL");
      await waitForExit(pid, 2000);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  async function boot(extra: string[] = []) {
    const dir = mkdtempSync(join(tmpdir(), "banger-fakefc-"));
    const sock = join(dir, "fc.sock");
    const proc = Bun.spawn([process.execPath, entry, "--api-sock", sock, ...extra], { stdout: "pipe", stderr: "pipe" });
    started.push({ pid: proc.pid, dir });
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`http://localhost${path}`, { unix: sock, method, body: body && JSON.stringify(body) } as RequestInit);
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    };
    // The socket file appears at bind, a moment before listen.
    while (!existsSync(sock) || !(await call("GET", "/").catch(() => null))) await Bun.sleep(10);
    const kernel = join(dir, "vmlinux");
    writeFileSync(kernel, "x");
    const uds = join(dir, "agent.sock");
    await call("PUT", "/boot-source", { kernel_image_path: kernel });
    await call("PUT", "/vsock", { guest_cid: 3, uds_path: uds });
    return { dir, sock, uds, proc, call, start: () => call("PUT", "/actions", { action_type: "InstanceStart" }) };
  }

  test("--version prints Firecracker's banner", async () => {
    const proc = Bun.spawn([process.execPath, entry, "--version"], { stdout: "pipe" });
    expect(await new Response(proc.stdout).text()).toStartWith("Firecracker v1.16.1");
    expect(await proc.exited).toBe(0);
  });

  test("SendCtrlAltDel exits 0 shortly after and takes the agent with it", async () => {
    const vm = await boot();
    await vm.start();
    const t0 = Date.now();
    expect((await vm.call("PUT", "/actions", { action_type: "SendCtrlAltDel" })).status).toBe(204);
    expect(await vm.proc.exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(await new Response(vm.proc.stdout).text()).toContain("Command line: reboot=k panic=1");
  });

  test("--ignore-ctrl-alt-del answers 204 until the i8042 buffer fills", async () => {
    const vm = await boot(["--ignore-ctrl-alt-del"]);
    await vm.start();
    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push((await vm.call("PUT", "/actions", { action_type: "SendCtrlAltDel" })).status);
    expect(statuses).toEqual([204, 204, 204, 204, 400]);
    expect(vm.proc.exitCode).toBeNull();
  });

  test("SIGTERM kills the fake by the default action", async () => {
    const vm = await boot();
    await vm.start();
    vm.proc.kill("SIGTERM");
    await vm.proc.exited;
    expect(vm.proc.signalCode).toBe("SIGTERM");
  });

  test("a SIGKILLed fake takes its agent with it, as a guest dies with its VMM", async () => {
    const vm = await boot();
    await vm.start();
    const agentSock = join(tmpdir(), `fake-fc-agent-${vm.proc.pid}.sock`);
    let agents: number[] = [];
    for (let i = 0; i < 300 && agents.length === 0; i++, await Bun.sleep(10)) agents = findByArgs("--unix", agentSock);
    expect(agents.length).toBe(1);
    vm.proc.kill("SIGKILL");
    expect(await waitForExit(agents[0]!, 2000)).toBe(true);
  });

  test("hybrid vsock closes CONNECT to a port nothing listens on", async () => {
    const vm = await boot();
    await vm.start();
    const sock = createConnection(vm.uds);
    sock.write("CONNECT 52\n");
    const got = await new Promise<string>((resolve) => {
      let buf = "";
      sock.on("data", (c) => (buf += c));
      sock.on("close", () => resolve(buf));
    });
    expect(got).toBe("");
  });

  test("an eleventh connection gets 503", async () => {
    const vm = await boot();
    const socks = Array.from({ length: 10 }, () => createConnection(vm.sock));
    await Bun.sleep(100);
    const reply = await new Promise<string>((resolve) => {
      const s = createConnection(vm.sock);
      let buf = "";
      s.on("data", (c) => (buf += c));
      s.on("close", () => resolve(buf));
    });
    socks.forEach((s) => s.destroy());
    expect(reply).toStartWith("HTTP/1.1 503 ");
  });
});
