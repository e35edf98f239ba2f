import { BangerError } from "../../errors.ts";
import type { RunOptions, RunResult, Runner } from "../runner.ts";

/** What every host-network function needs: the command seam, and whether to go through `sudo -n`. */
export interface NetDeps {
  runner: Runner;
  /** True when not root: privileged commands run as `sudo -n …` and never prompt. */
  sudo: boolean;
}

/** The hint every permission failure carries. */
export const SETUP_HINT = "run `sudo banger host setup` once (it needs root), or allow banger's user passwordless `sudo -n` for ip, nft and iptables";

const SUDO_FAILURE = /^sudo: /m;
const NOT_PERMITTED = /Operation not permitted|Permission denied|must be run as root|you must be root/i;

/** Runs a command that needs CAP_NET_ADMIN; sudo or permission failures become permission_denied. */
export async function priv(deps: NetDeps, argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const full = deps.sudo ? ["sudo", "-n", ...argv] : argv;
  let r: RunResult;
  try {
    r = await deps.runner.run(full, { ...opts, allowFailure: true });
  } catch (err) {
    // Not root and no sudo to spawn: say that, not that the tool itself is missing.
    if (deps.sudo && (err as { code?: string }).code === "ENOENT") {
      throw new BangerError("permission_denied", `\`${argv.join(" ")}\` needs root, and sudo is not installed`, { hint: SETUP_HINT });
    }
    throw err;
  }
  if (r.code === 0) return r;
  if (deps.sudo && SUDO_FAILURE.test(r.stderr)) {
    throw new BangerError("permission_denied", `\`sudo -n ${argv[0]}\` was refused: ${firstLine(r.stderr)}`, { hint: SETUP_HINT });
  }
  if (NOT_PERMITTED.test(r.stderr)) {
    throw new BangerError("permission_denied", `\`${argv.join(" ")}\` needs root: ${firstLine(r.stderr)}`, { hint: SETUP_HINT });
  }
  if (opts.allowFailure) return r;
  throw commandFailed(argv, r);
}

/** Runs a read-only command that needs no privilege (ip link show, sysctl -n). */
export async function read(deps: NetDeps, argv: string[]): Promise<RunResult> {
  const r = await deps.runner.run(argv, { allowFailure: true });
  if (r.code !== 0) throw commandFailed(argv, r);
  return r;
}

function commandFailed(argv: string[], r: RunResult): BangerError {
  return new BangerError("failed_precondition", `\`${argv.join(" ")}\` failed (exit ${r.code}): ${firstLine(r.stderr || r.stdout)}`, {
    hint: "Check `banger host status` and `banger doctor`; `sudo banger host setup` repairs the host network",
  });
}

function firstLine(s: string): string {
  return s.trim().split("\n")[0] ?? "";
}
