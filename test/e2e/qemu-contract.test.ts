/**
 * The driver contract's interface half against QEMU microvm with a real guest under TCG: one
 * booted guest (the test rootfs with the real guest agent, started by its image unit) is shared by
 * start, agent, pause/resume, rediscovery, suspend/restore and the graceful stop; kill and the
 * failed starts need no booted guest. Firecracker's own API rules stay with the Firecracker runs.
 */
import { afterAll } from "bun:test";
import { join } from "node:path";
import { AGENT_UNIT, GUEST_AGENT_PATH } from "../../src/images/glue/index";
import { driverContract } from "../../src/testing/driver-contract";
import { guestChecks, makeTestRootfs, removeTestRootfs, testKernel, waitForConsoleLog } from "../../src/testing/guest-fixtures";
import { hasFile, projectRoot } from "../../src/testing/skip";
import { QemuDriver } from "../../src/vm/drivers/qemu";
import type { BootPlan } from "../../src/vm/drivers/types";

const agentBin = join(projectRoot, "dist", "banger-agent");

let image: Promise<string> | null = null;
/** The test rootfs plus the agent as images install it (early in sysinit, --auto picks virtio-serial). */
const rootfs = () =>
  (image ??= makeTestRootfs({
    extraFiles: [
      { path: GUEST_AGENT_PATH, fromFile: agentBin, mode: 0o755 },
      { path: "/etc/systemd/system/banger-agent.service", content: AGENT_UNIT },
      { path: "/etc/systemd/system/sysinit.target.wants/banger-agent.service", symlink: "/etc/systemd/system/banger-agent.service" },
    ],
  }));
afterAll(async () => {
  const made = await image?.catch(() => null);
  if (made) removeTestRootfs(made);
});

/** Waits for the serial console's login prompt: systemd-logind, which handles the power button, is up by then. */
async function loginPrompt(plan: BootPlan): Promise<void> {
  const ms = await waitForConsoleLog(plan.consoleLog, /login: /, 240_000);
  console.log(`driver contract: QEMU guest reached its login prompt ${ms} ms after start`);
}

const qemu = () => new QemuDriver({ accel: "auto", warn: () => {} });

driverContract("qemu microvm (real guest under TCG)", qemu, {
  skip: null,
  needs: [...guestChecks(), [hasFile(agentBin), "dist/banger-agent not built (bun run build)"]],
  kernel: testKernel,
  rootfs,
  // A guest 400 ms into a TCG boot has no power-button handler yet, so it ignores the request.
  makeIgnoringDriver: qemu,
  agent: true,
  graceMs: 60_000,
  shareGuest: true,
  ready: loginPrompt,
  memoryMib: 256,
  timeoutMs: 300_000,
  answerMs: 60_000,
});
