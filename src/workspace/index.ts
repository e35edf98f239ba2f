/**
 * The workspace: a host repository's working tree copied into a guest (`prepare`) and
 * the guest's work brought back as a branch or patch (`export`). Both talk to the guest
 * only through a GuestShell, so they run over SSH in production and locally in tests.
 */
export { prepareWorkspace, BASE_REF, DEFAULT_GUEST_DIR, type PrepareOptions, type PrepareResult, type PrepareDeps } from "./prepare.ts";
export { exportWorkspace, type ExportOptions, type ExportResult } from "./export.ts";
export { localShell, shq, type GuestShell, type GuestIo, type GuestResult } from "./shell.ts";
export { syncWorkspace, type SyncOptions, type SyncResult } from "./bring.ts";
export { SYNCED_REF } from "./prepare.ts";
