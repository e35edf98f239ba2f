/**
 * A fake `firecracker` for tests and benchmarks: Firecracker's CLI and HTTP API (validated against the
 * swagger spec at runtime), its pre/post-boot rules and messages, hybrid vsock bridged to a real agent
 * process, and its exit behaviour. Run: `bun src/testing/fake-firecracker.ts --api-sock <path> --id <id>`.
 */
import { existsSync } from "node:fs";
import { ArgError, parseArgs, type FakeArgs } from "./fake-firecracker/cli.ts";
import { PretendGuest, agentSocketPath, defaultAgentArgv, guestRootPath } from "./fake-firecracker/guest.ts";
import { serveApi } from "./fake-firecracker/http.ts";
import { loadApiSpec } from "./fake-firecracker/schema.ts";
import { FakeVmm } from "./fake-firecracker/vmm.ts";

/** The version the fake reports, matching the spec it serves. */
export const FAKE_VERSION = "1.16.1";

// Firecracker's exit codes (src/firecracker/src/main.rs).
const EXIT_GENERIC = 1;
const EXIT_BAD_ARGS = 153;

function stamp(id: string, message: string): string {
  return `${new Date().toISOString()} [${id}:main] ${message}\n`;
}

/** Runs the fake until it exits; returns only through process.exit. */
export async function main(argv: string[]): Promise<void> {
  let args: FakeArgs;
  try {
    args = parseArgs(argv);
  } catch (err) {
    if (!(err instanceof ArgError)) throw err;
    process.stderr.write(`Arguments parsing error: ${err.message}\n\nFor more information try --help\n`);
    process.exit(EXIT_BAD_ARGS);
  }
  if (args.version) {
    process.stdout.write(`Firecracker v${FAKE_VERSION}\n\n`);
    process.exit(0);
  }
  // Firecracker never unlinks the socket path; an existing one means another instance or a stale run.
  if (existsSync(args.apiSock)) {
    process.stderr.write(stamp(args.id, `Failed to open the API socket at: ${args.apiSock}. Check that it is not already used.`));
    process.exit(EXIT_GENERIC);
  }
  const write = (text: string) => void process.stdout.write(text);
  const guest = new PretendGuest({
    agentArgv: args.agentCmd ? args.agentCmd.split(/\s+/).filter(Boolean) : defaultAgentArgv(),
    // Outside the VM directory, so a SIGKILLed fake leaves nothing there that real Firecracker would not.
    agentSocket: agentSocketPath(),
    root: guestRootPath(),
    agentDelayMs: args.agentDelayMs,
    write,
  });
  guest.prestart();
  let vmm: FakeVmm | null = null;
  const exit = (code: number) => {
    guest.halt();
    vmm?.close();
    process.exit(code);
  };
  // Firecracker does not handle SIGTERM; the fake ends its agent and then dies of the same signal.
  process.once("SIGTERM", () => {
    guest.halt();
    process.kill(process.pid, "SIGTERM");
  });
  process.on("exit", () => guest.halt());
  vmm = new FakeVmm(loadApiSpec(), {
    id: args.id,
    version: FAKE_VERSION,
    ignoreCtrlAltDel: args.ignoreCtrlAltDel,
    guest,
    exit,
    rebootDelayMs: 150,
  });
  try {
    if (args.logPath) vmm.setLogger({ log_path: args.logPath, level: args.level, show_level: args.showLevel, show_log_origin: args.showLogOrigin });
    if (args.metricsPath) vmm.setMetrics(args.metricsPath);
  } catch (err) {
    process.stderr.write(stamp(args.id, (err as Error).message));
    process.exit(EXIT_GENERIC);
  }
  write(stamp(args.id, `Running Firecracker v${FAKE_VERSION}`));
  const v = vmm;
  await serveApi(args.apiSock, (req) => v.handle(req));
}

// Not a top-level await, so the fake also compiles to bytecode (the bench runs it compiled, starting like a native VMM).
if (import.meta.main) {
  main(process.argv.slice(2)).catch((err) => {
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    process.exit(1);
  });
}
