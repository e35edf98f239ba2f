/** banger's in-guest boot glue, as the files an image build or OCI import bakes into a rootfs. */
import { chmod, mkdir, symlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import agentUnit from "./banger-agent.service" with { type: "text" };
import initScript from "./init.sh" with { type: "text" };
import sshdDropIn from "./sshd-banger.conf" with { type: "text" };
import sshdHostKey from "./sshd-hostkey.conf" with { type: "text" };

/** Where the boot glue lives in the guest; the kernel runs it via `init=`. */
export const GUEST_INIT_PATH = "/usr/lib/banger/init";
/** Where the guest agent binary lives in the guest. */
export const GUEST_AGENT_PATH = "/usr/local/bin/banger-agent";
/** The agent version baked into the image, compared with the config drive's at boot. */
export const GUEST_AGENT_VERSION_PATH = "/etc/banger/agent-version";
/** Kernel args banger adds for its glue; the driver adds console, reboot, panic and `root=/dev/vda ro`. */
export function glueBootArgs(net: { guestIp: string; gatewayIp: string; netmask: string; hostname: string }): string {
  return `init=${GUEST_INIT_PATH} ip=${net.guestIp}::${net.gatewayIp}:${net.netmask}:${net.hostname}:eth0:off`;
}

/** One entry of the glue tree, by absolute guest path. */
export type GlueEntry =
  | { kind: "file"; path: string; content: string | Uint8Array | Blob; mode: number }
  | { kind: "dir"; path: string; mode: number }
  | { kind: "symlink"; path: string; target: string };

/** The sshd drop-in with exactly banger's directives. */
export const SSHD_DROP_IN = sshdDropIn;
/** The boot glue script (PID 1 before systemd). */
export const INIT_SCRIPT = initScript;
/** The systemd unit that runs the guest agent. */
export const AGENT_UNIT = agentUnit;

/** Everything an image needs besides the agent binary itself. */
export function glueEntries(agent?: { binary: string | Blob; version: string }): GlueEntry[] {
  const entries: GlueEntry[] = [
    { kind: "dir", path: "/usr/lib/banger", mode: 0o755 },
    { kind: "file", path: GUEST_INIT_PATH, content: initScript, mode: 0o755 },
    // the overlay root is mounted here: the base is read-only when the glue runs
    { kind: "dir", path: "/usr/lib/banger/root", mode: 0o755 },
    { kind: "file", path: "/etc/ssh/sshd_config.d/banger.conf", content: sshdDropIn, mode: 0o644 },
    { kind: "file", path: "/etc/ssh/sshd_config.d/banger-hostkey.conf", content: sshdHostKey, mode: 0o644 },
    { kind: "file", path: "/etc/systemd/system/banger-agent.service", content: agentUnit, mode: 0o644 },
    { kind: "symlink", path: "/etc/systemd/system/sysinit.target.wants/banger-agent.service", target: "../banger-agent.service" },
    { kind: "dir", path: "/etc/banger", mode: 0o755 },
  ];
  if (agent) {
    const binary = typeof agent.binary === "string" ? Bun.file(agent.binary) : agent.binary;
    entries.push({ kind: "file", path: GUEST_AGENT_PATH, content: binary, mode: 0o755 });
    entries.push({ kind: "file", path: GUEST_AGENT_VERSION_PATH, content: `${agent.version}\n`, mode: 0o644 });
  }
  return entries;
}

/** Materialises glue entries under a host directory (a staging tree or an extracted rootfs). */
export async function writeGlue(root: string, entries: GlueEntry[]): Promise<void> {
  for (const e of entries) {
    const dest = join(root, e.path);
    await mkdir(dirname(dest), { recursive: true, mode: 0o755 });
    if (e.kind === "dir") {
      await mkdir(dest, { recursive: true });
      await chmod(dest, e.mode);
    } else if (e.kind === "file") {
      await Bun.write(dest, e.content);
      await chmod(dest, e.mode);
    } else {
      await symlink(e.target, dest);
    }
  }
}
