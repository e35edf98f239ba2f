import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { bangerBin, type TestHome } from "../../src/testing/cli.ts";
import { fakeFirecrackerHome } from "../../src/testing/fake-env.ts";
import { hasBin, isRoot, testNeeds } from "../../src/testing/skip.ts";

// An MCP client (the official SDK) speaks to `banger mcp` over stdio; the VMs run under the
// fake Firecracker, whose pretend guest runs the real agent, so exec and files are real.
const needs: Array<[boolean, string]> = [
  [existsSync(bangerBin), "dist/banger not built"],
  [isRoot, "needs root (bridge and TAPs)"],
  [hasBin("nft") || hasBin("iptables"), "needs nftables or iptables"],
];
let h: TestHome & { teardownNet(): Promise<void> };
let client: Client;

beforeAll(async () => {
  if (!needs.every(([ok]) => ok)) return;
  h = await fakeFirecrackerHome({ taps: 4 });
  client = new Client({ name: "banger-test", version: "1.0.0" });
  await client.connect(new StdioClientTransport({ command: bangerBin, args: ["mcp"], env: h.env, stderr: "pipe" }));
}, 120_000);

afterAll(async () => {
  await client?.close();
  if (!h) return;
  await h.run(["vm", "delete", "--force", "m1"]);
  await h.teardownNet();
  await h.cleanup();
});

type Result = { content: Array<{ type: string; text: string }>; structuredContent?: Record<string, unknown>; isError?: boolean };
const call = async (name: string, args: Record<string, unknown> = {}) => (await client.callTool({ name, arguments: args })) as Result;

describe("banger mcp over stdio (fake Firecracker)", () => {
  testNeeds(
    "initialize, list tools, create a VM, exec, write and read a file, logs resource, delete",
    needs,
    async () => {
      expect(client.getServerVersion()?.name).toBe("banger");
      const tools = (await client.listTools()).tools.map((t) => t.name).sort();
      expect(tools).toEqual([
        "exec",
        "ports",
        "read_file",
        "vm_create",
        "vm_delete",
        "vm_list",
        "vm_start",
        "vm_stop",
        "workspace_export",
        "workspace_prepare",
        "write_file",
      ]);

      const created = await call("vm_create", { name: "m1" });
      expect(created.isError).toBeFalsy();
      expect(created.structuredContent).toMatchObject({ name: "m1", state: "running" });
      expect((await call("vm_list")).structuredContent?.vms).toMatchObject([{ name: "m1" }]);

      const ran = await call("exec", { vm: "m1", command: ["sh", "-c", "echo hi; echo oops >&2; exit 3"] });
      expect(ran.structuredContent).toMatchObject({ exit_code: 3, stdout: "hi\n", stderr: "oops\n", timed_out: false });
      const big = await call("exec", { vm: "m1", command: ["head", "-c", "100000", "/dev/zero"], max_output_bytes: 1000 });
      expect(big.structuredContent).toMatchObject({ exit_code: 0, stdout_truncated: true });
      const slow = await call("exec", { vm: "m1", command: ["sleep", "30"], timeout_s: 1 });
      expect(slow.structuredContent).toMatchObject({ timed_out: true, exit_code: 137 });

      const path = `/tmp/banger-mcp-${h.root.split("/").at(-1)}/note.txt`;
      expect((await call("write_file", { vm: "m1", path, content: "héllo\n", mode: "600" })).isError).toBeFalsy();
      expect((await call("read_file", { vm: "m1", path })).structuredContent).toMatchObject({ content: "héllo\n", truncated: false });
      await call("exec", { vm: "m1", command: ["rm", "-rf", path.replace(/\/note.txt$/, "")] });

      const resources = await client.listResources();
      expect(resources.resources.map((r) => r.uri)).toContain("banger://vm/m1/log");
      const log = await client.readResource({ uri: "banger://vm/m1/log" });
      expect(JSON.stringify(log.contents[0])).toContain("banger-agent");

      expect((await call("vm_delete", { name: "m1", force: true })).isError).toBeFalsy();
      expect((await call("vm_list")).structuredContent?.vms).toEqual([]);
    },
    180_000,
  );

  testNeeds(
    "a bad argument or a failed call comes back as an MCP error naming it, with banger's hint",
    needs,
    async () => {
      const bad = await call("exec", { vm: "m1", command: "ls" });
      expect(bad.isError).toBe(true);
      expect(bad.content[0]?.text).toContain("command");
      const missing = await call("vm_stop", { name: "nosuchvm" });
      expect(missing.isError).toBe(true);
      expect(missing.content[0]?.text).toContain("nosuchvm");
      const badPath = await call("read_file", { vm: "m1", path: "relative" });
      expect(badPath.content[0]?.text).toContain("path must be absolute");
    },
    60_000,
  );
});
