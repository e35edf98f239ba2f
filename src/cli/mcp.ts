/**
 * `banger mcp`: a Model Context Protocol server on stdio for coding agents. Tools create,
 * list, start, stop and delete VMs, run commands (with a timeout and capped output), read and
 * write files, prepare and export workspaces and list ports; each VM's console log is a
 * resource. Every call goes through the daemon like the CLI's; a failure comes back as an MCP
 * tool error carrying banger's message and hint. Nothing but the protocol goes to stdout.
 */
import { McpServer, ResourceTemplate } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";
import { BangerError, toBangerError, type ErrorCode } from "../errors.ts";
import type { Method, Rpc } from "../rpc/contract.ts";
import type { FanMethod } from "../rpc/results.ts";
import { parseSize } from "../units.ts";
import type { VmView } from "../vm/model.ts";
import type { FanoutResult } from "../vm/refs.ts";
import { VERSION } from "../version.ts";
import { capped, startExec } from "./exec-client.ts";
import type { Out } from "./render.ts";
import * as ws from "./workspace-cmds.ts";

/** What the server needs: the daemon's RPC and exec socket. */
export interface McpDeps {
  rpc: Rpc;
  execSocket: string;
  /** Starts the daemon when it is not running (exec goes to its socket directly). */
  ensureDaemon(): Promise<void>;
}

type ToolResult = { content: Array<{ type: "text"; text: string }>; structuredContent?: Record<string, unknown>; isError?: boolean };

function ok(value: unknown, text?: string): ToolResult {
  const structured = value && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : { result: value };
  return { content: [{ type: "text", text: text ?? JSON.stringify(value, null, 2) }], structuredContent: structured };
}

/** Runs a tool body; a thrown error becomes an MCP tool error with banger's message and hint. */
async function guarded(fn: () => Promise<ToolResult>): Promise<ToolResult> {
  try {
    return await fn();
  } catch (err) {
    const e = toBangerError(err);
    return { content: [{ type: "text", text: `${e.message}${e.hint ? `\nhint: ${e.hint}` : ""}` }], structuredContent: { error: e.toJSON() }, isError: true };
  }
}

/** "8G" → bytes, as the CLI's --disk; the schema already checked the shape. */
function sizeBytes(text: string): number {
  const n = parseSize(text);
  if (n === null) throw new BangerError("invalid_argument", `disk: "${text}" is not a size`, { hint: "Use a size such as 8G or 512M." });
  return n;
}

async function fanOne(rpc: Rpc, method: FanMethod, name: string, extra: Record<string, unknown> = {}) {
  const [r] = await rpc(method, { refs: [name], ...extra });
  if (!r?.ok) throw new BangerError(r?.error?.code ?? "internal", r?.message ?? `${method} failed`, { hint: r?.error?.hint });
  return { name: r.name, message: r.message };
}

/** One command in a VM with a deadline and capped output. */
export async function execCapped(
  execSocket: string,
  vm: string,
  argv: string[],
  o: { stdin?: Uint8Array; cwd?: string; env?: Record<string, string>; timeoutS?: number; maxBytes?: number },
) {
  const out = capped(o.maxBytes ?? 64 * 1024);
  const err = capped(o.maxBytes ?? 64 * 1024);
  const stdin = o.stdin
    ? (async function* () {
        yield o.stdin!;
      })()
    : null;
  const handle = await startExec(execSocket, { vm, argv, cwd: o.cwd, env: o.env }, { stdin, stdout: out.take, stderr: err.take });
  let timedOut = false;
  const timer = setTimeout(
    () => {
      timedOut = true;
      handle.kill();
    },
    (o.timeoutS ?? 60) * 1000,
  );
  try {
    const exit = await handle.done;
    return {
      exit_code: exit.code,
      signal: exit.signal,
      timed_out: timedOut,
      stdout: out.text(),
      stderr: err.text(),
      stdout_truncated: out.truncated(),
      stderr_truncated: err.truncated(),
      raw: out,
    };
  } finally {
    clearTimeout(timer);
  }
}

/** An Out that keeps what a command would have printed, for a tool's answer. */
function captureOut(): Out & { text(): string } {
  const lines: string[] = [];
  return { out: (l: string) => void lines.push(l), err: (l: string) => void lines.push(l), isTTY: false, color: false, text: () => lines.join("\n") };
}

const vmName = z.string().min(1).describe("VM name (or id prefix)");

function vmTools(server: McpServer, { rpc }: McpDeps) {
  server.registerTool(
    "vm_create",
    {
      description: "Create and start a VM (Debian with git, ssh and the banger agent). Returns the VM.",
      inputSchema: {
        name: z
          .string()
          .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, "names are lowercase letters, digits and -")
          .optional(),
        image: z.string().optional(),
        cpus: z.number().int().min(1).max(64).optional(),
        memory_mib: z.number().int().min(128).optional(),
        disk: z
          .string()
          .regex(/^\d+[KMGT]?$/i)
          .optional()
          .describe("work disk size, e.g. 8G"),
        nat: z.boolean().optional().describe("let the VM reach the outside world"),
      },
    },
    (a) =>
      guarded(async () =>
        ok(
          await rpc("vm.create", {
            name: a.name,
            image: a.image,
            cpus: a.cpus,
            memory: a.memory_mib,
            disk: a.disk === undefined ? undefined : sizeBytes(a.disk),
            nat: a.nat,
          }),
        ),
      ),
  );
  server.registerTool("vm_list", { description: "List VMs with state, IP and DNS name." }, () => guarded(async () => ok({ vms: await rpc("vm.list") })));
  for (const [tool, method, what] of [
    ["vm_start", "vm.start", "Start a stopped VM."],
    ["vm_stop", "vm.stop", "Stop a VM (graceful, then forced)."],
  ] as const) {
    server.registerTool(tool, { description: what, inputSchema: { name: vmName } }, (a) => guarded(async () => ok(await fanOne(rpc, method, a.name))));
  }
  server.registerTool(
    "vm_delete",
    { description: "Delete a VM and everything it owns.", inputSchema: { name: vmName, force: z.boolean().optional().describe("stop it first if running") } },
    (a) => guarded(async () => ok(await fanOne(rpc, "vm.delete", a.name, { force: Boolean(a.force) }))),
  );
  server.registerTool("ports", { description: "Listening ports in a VM, with URLs where they speak HTTP(S).", inputSchema: { name: vmName } }, (a) =>
    guarded(async () => ok(await rpc("vm.ports", { ref: a.name }))),
  );
}

function guestTools(server: McpServer, deps: McpDeps) {
  const execIn: ExecIn = async (vm, argv, o) => {
    await deps.ensureDaemon();
    return execCapped(deps.execSocket, vm, argv, o);
  };
  execTool(server, execIn);
  readFileTool(server, execIn);
  writeFileTool(server, execIn);
}

/** Runs argv in a VM through the agent, output capped (the daemon started first when needed). */
type ExecIn = (vm: string, argv: string[], o: Parameters<typeof execCapped>[3]) => ReturnType<typeof execCapped>;

function execTool(server: McpServer, execIn: ExecIn) {
  server.registerTool(
    "exec",
    {
      description: "Run a command in a VM through the guest agent; returns exit code, stdout and stderr (capped).",
      inputSchema: {
        vm: vmName,
        command: z.array(z.string()).min(1).describe('argv, e.g. ["sh", "-c", "ls -la"]'),
        stdin: z.string().optional(),
        cwd: z.string().startsWith("/").optional(),
        env: z.record(z.string(), z.string()).optional(),
        timeout_s: z.number().positive().max(3600).optional().describe("default 60"),
        max_output_bytes: z
          .number()
          .int()
          .positive()
          .max(16 * 1024 * 1024)
          .optional()
          .describe("per stream, default 65536"),
      },
    },
    (a) =>
      guarded(async () => {
        const r = await execIn(a.vm, a.command, {
          stdin: a.stdin === undefined ? undefined : new TextEncoder().encode(a.stdin),
          cwd: a.cwd,
          env: a.env,
          timeoutS: a.timeout_s,
          maxBytes: a.max_output_bytes,
        });
        const { raw: _raw, ...result } = r;
        const text =
          `exit ${r.exit_code}${r.timed_out ? " (timed out, killed)" : ""}\n` +
          `--- stdout${r.stdout_truncated ? " (truncated)" : ""}\n${r.stdout}\n` +
          `--- stderr${r.stderr_truncated ? " (truncated)" : ""}\n${r.stderr}`;
        return ok(result, text);
      }),
  );
}

function readFileTool(server: McpServer, execIn: ExecIn) {
  server.registerTool(
    "read_file",
    {
      description: "Read a file from a VM (UTF-8, or base64 for binary).",
      inputSchema: {
        vm: vmName,
        path: z.string().startsWith("/", "path must be absolute"),
        encoding: z.enum(["utf8", "base64"]).optional(),
        max_bytes: z
          .number()
          .int()
          .positive()
          .max(64 * 1024 * 1024)
          .optional()
          .describe("default 1 MiB"),
      },
    },
    (a) =>
      guarded(async () => {
        const r = await execIn(a.vm, ["cat", "--", a.path], { maxBytes: a.max_bytes ?? 1024 * 1024 });
        if (r.exit_code !== 0) throw new BangerError("failed_precondition", `read_file ${a.path}: ${r.stderr.trim() || `exit ${r.exit_code}`}`);
        const content = a.encoding === "base64" ? r.raw.bytes().toString("base64") : r.stdout;
        return ok({ path: a.path, content, truncated: r.stdout_truncated, bytes: r.raw.total() }, content);
      }),
  );
}

function writeFileTool(server: McpServer, execIn: ExecIn) {
  server.registerTool(
    "write_file",
    {
      description: "Write a file in a VM (parent directories are created).",
      inputSchema: {
        vm: vmName,
        path: z.string().startsWith("/", "path must be absolute"),
        content: z.string(),
        encoding: z.enum(["utf8", "base64"]).optional(),
        mode: z
          .string()
          .regex(/^[0-7]{3,4}$/, "mode is octal, e.g. 644")
          .optional(),
      },
    },
    (a) =>
      guarded(async () => {
        const data = a.encoding === "base64" ? new Uint8Array(Buffer.from(a.content, "base64")) : new TextEncoder().encode(a.content);
        const script = `mkdir -p -- "$(dirname -- "$1")" && cat > "$1"${a.mode ? ` && chmod ${a.mode} -- "$1"` : ""}`;
        const r = await execIn(a.vm, ["sh", "-c", script, "sh", a.path], { stdin: data });
        if (r.exit_code !== 0) throw new BangerError("failed_precondition", `write_file ${a.path}: ${r.stderr.trim() || `exit ${r.exit_code}`}`);
        return ok({ path: a.path, bytes: data.length }, `wrote ${data.length} bytes to ${a.path}`);
      }),
  );
}

function workspaceTools(server: McpServer, { rpc }: McpDeps) {
  server.registerTool(
    "workspace_prepare",
    {
      description: "Copy a host git repo's working tree and history to /root/repo in a VM.",
      inputSchema: {
        vm: vmName,
        from: z.string().startsWith("/", "from must be an absolute host path"),
        full_copy: z.boolean().optional(),
        replace: z.boolean().optional(),
      },
    },
    (a) =>
      guarded(async () => {
        const o = captureOut();
        await ws.prepare(o, rpc, a.vm, { from: a.from, fullCopy: a.full_copy, replace: a.replace });
        return ok({ summary: o.text() }, o.text());
      }),
  );
  server.registerTool(
    "workspace_export",
    {
      description: "Bring a VM's /root/repo work back to a host repo as a branch (default banger/<vm>) or a patch file.",
      inputSchema: {
        vm: vmName,
        to: z.string().startsWith("/", "to must be an absolute host path"),
        branch: z.string().optional(),
        patch: z.string().startsWith("/").optional(),
        force: z.boolean().optional(),
      },
    },
    (a) =>
      guarded(async () => {
        const o = captureOut();
        await ws.exportCmd(o, rpc, a.vm, { to: a.to, branch: a.branch, patch: a.patch, force: a.force });
        return ok({ summary: o.text() }, o.text());
      }),
  );
}

/** Builds the server with every tool and the log resources. */
export function buildMcpServer(deps: McpDeps): McpServer {
  const server = new McpServer({ name: "banger", version: VERSION });
  vmTools(server, deps);
  guestTools(server, deps);
  workspaceTools(server, deps);
  server.registerResource(
    "vm-log",
    new ResourceTemplate("banger://vm/{name}/log", {
      list: async () => ({
        resources: (await deps.rpc("vm.list")).map((v) => ({ uri: `banger://vm/${v.name}/log`, name: `${v.name} console log`, mimeType: "text/plain" })),
      }),
    }),
    { description: "A VM's serial console log (the last 500 lines) and its VMM log", mimeType: "text/plain" },
    async (uri, { name }) => {
      const l = await deps.rpc("vm.logs", { ref: String(name), lines: 500 });
      return { contents: [{ uri: uri.href, mimeType: "text/plain", text: `${l.console}${l.vmm ? `\n==> vmm log <==\n${l.vmm}` : ""}` }] };
    },
  );
  return server;
}

/** Serves MCP on stdin/stdout until the client closes it. */
export async function serveMcp(deps: McpDeps): Promise<number> {
  const server = buildMcpServer(deps);
  const closed = new Promise<void>((resolve) => (server.server.onclose = () => resolve()));
  await server.connect(new StdioServerTransport());
  await closed;
  return 0;
}
