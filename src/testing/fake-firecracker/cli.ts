/** Firecracker's command line, plus the fake's own test switches. */
export interface FakeArgs {
  apiSock: string;
  id: string;
  logPath?: string;
  level?: string;
  metricsPath?: string;
  showLevel: boolean;
  showLogOrigin: boolean;
  bootTimer: boolean;
  enablePci: boolean;
  noSeccomp: boolean;
  version: boolean;
  /** Fake-only: the pretend guest ignores Ctrl+Alt+Del. */
  ignoreCtrlAltDel: boolean;
  /** Fake-only: the agent command (default: env FAKE_FC_AGENT_CMD, then the project's agent). */
  agentCmd?: string;
  /** Fake-only: how long after InstanceStart the agent starts listening. */
  agentDelayMs: number;
}

/** A command-line error; Firecracker exits 153 for these. */
export class ArgError extends Error {}

const VALUE_FLAGS: Record<string, keyof FakeArgs> = {
  "api-sock": "apiSock",
  id: "id",
  "log-path": "logPath",
  level: "level",
  "metrics-path": "metricsPath",
  "agent-cmd": "agentCmd",
  "agent-delay-ms": "agentDelayMs",
};
const BOOL_FLAGS: Record<string, keyof FakeArgs> = {
  "show-level": "showLevel",
  "show-log-origin": "showLogOrigin",
  "boot-timer": "bootTimer",
  "enable-pci": "enablePci",
  "no-seccomp": "noSeccomp",
  version: "version",
  "ignore-ctrl-alt-del": "ignoreCtrlAltDel",
};
// Accepted for compatibility; the fake has no use for their values.
const IGNORED_VALUE_FLAGS = new Set([
  "seccomp-filter",
  "start-time-us",
  "start-time-cpu-us",
  "parent-cpu-time-us",
  "mmds-size-limit",
  "http-api-max-payload-size",
]);

/** Parses argv (without the program name) with Firecracker's defaults. */
export function parseArgs(argv: string[]): FakeArgs {
  const args: FakeArgs = {
    apiSock: "/run/firecracker.socket",
    id: "anonymous-instance",
    showLevel: false,
    showLogOrigin: false,
    bootTimer: false,
    enablePci: false,
    noSeccomp: false,
    version: false,
    ignoreCtrlAltDel: false,
    agentDelayMs: 0,
  };
  const rec = args as unknown as Record<string, unknown>;
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i]!;
    if (!raw.startsWith("--")) throw new ArgError(`Found argument '${raw}' which wasn't expected, or isn't valid in this context.`);
    const [name, inline] = raw.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    if (BOOL_FLAGS[name]) {
      rec[BOOL_FLAGS[name]] = true;
      continue;
    }
    const key = VALUE_FLAGS[name];
    if (!key && !IGNORED_VALUE_FLAGS.has(name)) throw new ArgError(`Found argument '${raw}' which wasn't expected, or isn't valid in this context.`);
    const value = inline ?? argv[++i];
    if (value === undefined) throw new ArgError(`The argument '--${name}' requires a value but none was supplied.`);
    if (key) rec[key] = key === "agentDelayMs" ? Number(value) : value;
  }
  if (!Number.isFinite(args.agentDelayMs) || args.agentDelayMs < 0) throw new ArgError("--agent-delay-ms needs a number of milliseconds");
  validateInstanceId(args.id);
  return args;
}

/** Firecracker's instance id rule: 1 to 64 alphanumerics or '-'. */
export function validateInstanceId(id: string): void {
  if (id.length < 1 || id.length > 64) throw new ArgError(`Invalid instance ID: Invalid len (${id.length});  the length must be between 1 and 64`);
  const bad = [...id].findIndex((c) => !/[A-Za-z0-9-]/.test(c));
  if (bad >= 0) throw new ArgError(`Invalid instance ID: invalid char (${id[bad]}) at position ${bad}`);
}
