/**
 * Saving and restoring a QEMU guest. Guest RAM is always a shared file in the VM directory
 * (memory-backend-file, share=on), so with the `x-ignore-shared` migration capability a save
 * writes only device and CPU state (tens of KB) and a restore maps the same RAM file again.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { BangerError } from "../../errors.ts";
import { QmpClient } from "./qmp.ts";
import type { SavedStateFiles, SavedStateMeta } from "./types.ts";
import { systemClock, type Clock } from "./process.ts";

/** Bound on one save or load; nothing but device state moves, so this is generous. */
export const MIGRATION_TIMEOUT_MS = 60_000;
const QMP_TIMEOUT_MS = 5000;

/** A path quoted for the /bin/sh that QEMU's exec: migration runs. */
export function shellQuote(path: string): string {
  return `'${path.replaceAll("'", `'\\''`)}'`;
}

/** "7.2.11" from `qemu-system-x86_64 --version`, or null when the binary does not answer. */
export function qemuBinaryVersion(bin: string): string | null {
  const r = spawnSync(bin, ["--version"], { encoding: "utf8", timeout: 10_000 });
  return parseQemuVersion(r.stdout ?? "");
}

export function parseQemuVersion(text: string): string | null {
  return /version (\d+\.\d+\.\d+)/.exec(text)?.[1] ?? null;
}

/** Why a saved state cannot be loaded by this QEMU (version and accelerator must match), or null. */
export function qemuRestoreProblem(meta: SavedStateMeta, version: string | null, accel: string): string | null {
  if (meta.vmm !== "qemu") return `the saved state was written by ${meta.vmm}, not QEMU`;
  if (version !== meta.version) return `the saved state was written by QEMU ${meta.version} and this host runs QEMU ${version ?? "(unknown version)"}`;
  if (accel !== meta.accel) return `the saved state was written under ${meta.accel} and this host would run the VM under ${accel}`;
  return null;
}

/** Polls until the predicate on query-migrate's status holds; throws on failure or timeout. */
async function waitMigration(qmp: QmpClient, what: string, clock: Clock, done: (s: { status?: string; "error-desc"?: string }) => boolean): Promise<void> {
  const deadline = clock.now() + MIGRATION_TIMEOUT_MS;
  for (;;) {
    const s = (await qmp.execute("query-migrate", undefined, QMP_TIMEOUT_MS)) as { status?: string; "error-desc"?: string };
    if (s.status === "failed" || s.status === "cancelled") {
      throw new BangerError("internal", `QEMU could not ${what}: ${s["error-desc"] ?? s.status}`, { hint: "See the VM's vmm log (banger vm logs)." });
    }
    if (done(s)) return;
    if (clock.now() > deadline) throw new BangerError("timeout", `QEMU did not ${what} within ${MIGRATION_TIMEOUT_MS / 1000} s`);
    await clock.sleep(10);
  }
}

const IGNORE_SHARED = { capabilities: [{ capability: "x-ignore-shared", state: true }] };

/** Stops the vCPUs and writes device state to files.state; QEMU keeps running (paused) afterwards. */
export async function qemuSaveState(qmpPath: string, files: SavedStateFiles, accel: string, clock: Clock = systemClock): Promise<SavedStateMeta> {
  const qmp = await QmpClient.open(qmpPath, QMP_TIMEOUT_MS);
  try {
    const v = (await qmp.execute("query-version", undefined, QMP_TIMEOUT_MS)) as { qemu: { major: number; minor: number; micro: number } };
    await qmp.execute("stop", undefined, QMP_TIMEOUT_MS);
    await qmp.execute("migrate-set-capabilities", IGNORE_SHARED, QMP_TIMEOUT_MS);
    await qmp.execute("migrate", { uri: `exec:cat > ${shellQuote(files.state)}` }, QMP_TIMEOUT_MS);
    await waitMigration(qmp, "save the VM state", clock, (s) => s.status === "completed");
    return { vmm: "qemu", version: `${v.qemu.major}.${v.qemu.minor}.${v.qemu.micro}`, accel, savedAt: new Date(clock.now()).toISOString() };
  } finally {
    qmp.close();
  }
}

/** Loads device state into a QEMU started with `-incoming defer` and lets the guest run on. */
export async function qemuLoadState(qmpPath: string, files: SavedStateFiles, clock: Clock = systemClock, linkDownNic?: string): Promise<void> {
  if (!existsSync(files.state))
    throw new BangerError("not_found", `the saved state ${files.state} is missing`, { hint: "Start the VM cold instead (banger vm start --cold)." });
  const qmp = await QmpClient.open(qmpPath, QMP_TIMEOUT_MS);
  try {
    await qmp.execute("migrate-set-capabilities", IGNORE_SHARED, QMP_TIMEOUT_MS);
    await qmp.execute("migrate-incoming", { uri: `exec:cat ${shellQuote(files.state)}` }, QMP_TIMEOUT_MS);
    const deadline = clock.now() + MIGRATION_TIMEOUT_MS;
    for (;;) {
      const { status } = (await qmp.execute("query-status", undefined, QMP_TIMEOUT_MS)) as { status: string };
      if (status === "running") return;
      if (status !== "inmigrate") break;
      if (clock.now() > deadline) throw new BangerError("timeout", `QEMU did not load ${files.state} within ${MIGRATION_TIMEOUT_MS / 1000} s`);
      await clock.sleep(10);
    }
    await waitMigration(qmp, "load the VM state", clock, (s) => s.status === "completed" || s.status === undefined);
    if (linkDownNic) await qmp.execute("set_link", { name: linkDownNic, up: false }, QMP_TIMEOUT_MS);
    // The state was saved with the vCPUs stopped, so the restored VM waits for cont.
    await qmp.execute("cont", undefined, QMP_TIMEOUT_MS);
  } finally {
    qmp.close();
  }
}
