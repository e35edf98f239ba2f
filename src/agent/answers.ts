/**
 * Host-side checks of what the guest agent answers. A guest is untrusted: every answer is
 * validated (types, string lengths, list sizes) before the daemon uses it; keys banger does
 * not know are dropped (so a guest cannot add a `name`, and a newer agent's extra fields do
 * not break an older host), and a ports list is cut to MAX_PORTS.
 */
import * as v from "valibot";
import { BangerError } from "../errors.ts";
import { printable } from "../printable.ts";
import type { AgentMethod, AgentMethods } from "./protocol.ts";

/** Most listening sockets taken from one `ports` answer; the rest are dropped and counted. */
export const MAX_PORTS = 1024;

const text = (max: number) => v.pipe(v.string(), v.maxLength(max));
const count = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(2 ** 31));

const health = v.object({
  version: text(200),
  uptime_s: v.pipe(v.number(), v.finite(), v.minValue(0)),
  boot_id: text(64),
  hostname: text(253),
});

const socket = v.object({
  proto: v.picklist(["tcp", "udp"]),
  address: text(64),
  port: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(65535)),
  pid: v.optional(count),
  process: v.optional(text(64)),
  command: v.optional(text(4096)),
});

const ports = v.object({ sockets: v.array(socket) });

const hello = v.object({ version: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(1000)), agent: text(200) });

const reidentify = v.object({ done: v.pipe(v.array(text(64)), v.maxLength(32)) });

const SCHEMAS = { health, ports, hello, reidentify } satisfies Record<AgentMethod, v.GenericSchema>;

/** Where a validation issue is, as `sockets[3].port`. */
function where(issue: v.BaseIssue<unknown>): string {
  return (
    (issue.path ?? [])
      .map((p) => (typeof p.key === "number" ? `[${p.key}]` : `.${String(p.key)}`))
      .join("")
      .replace(/^\./, "") || "the answer"
  );
}

/** Cuts an over-long sockets list before validation, so a flood costs one slice. */
function capPorts(raw: unknown): { raw: unknown; dropped: number } {
  const sockets = (raw as { sockets?: unknown } | null)?.sockets;
  if (!Array.isArray(sockets) || sockets.length <= MAX_PORTS) return { raw, dropped: 0 };
  return { raw: { ...(raw as object), sockets: sockets.slice(0, MAX_PORTS) }, dropped: sockets.length - MAX_PORTS };
}

/** Validates an agent answer; throws `unavailable` naming the method and the first bad field. */
export function checkAnswer<M extends AgentMethod>(method: M, answer: unknown): AgentMethods[M] {
  const { raw, dropped } = method === "ports" ? capPorts(answer) : { raw: answer, dropped: 0 };
  const result = v.safeParse(SCHEMAS[method], raw);
  if (!result.success) {
    const issue = result.issues[0]!;
    const why = issue.received === "undefined" ? "missing" : printable(issue.message).slice(0, 120);
    throw new BangerError("unavailable", `the guest agent's answer to "${method}" is malformed at ${printable(where(issue)).slice(0, 80)}: ${why}`, {
      hint: "The guest's banger-agent is not banger's, or is broken; recreate the VM from a trusted image.",
    });
  }
  const value = result.output as AgentMethods[M];
  if (dropped) (value as AgentMethods["ports"]).dropped = dropped;
  return value;
}
