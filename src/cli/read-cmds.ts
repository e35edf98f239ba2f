/**
 * `vm list` and `vm show` on a lean path: one call to a running daemon of this build, without
 * loading the command table's modules (the config, every method's schema). Anything else (no
 * daemon yet, one of another build) goes the full way through commands.ts, which starts or
 * replaces the daemon first. Both methods only read, so asking twice is harmless.
 */
import { resolvePaths } from "../host/paths.ts";
import { call, DaemonUnreachable } from "../rpc/client.ts";
import type { Params, Result } from "../rpc/contract.ts";
import { BUILD_ID } from "../version.ts";
import { printJson, processOut } from "./render.ts";
import { renderVm, renderVmList } from "./vm-render.ts";

type ReadMethod = "vm.list" | "vm.show";

async function readRpc<M extends ReadMethod>(method: M, params: Params<M>): Promise<Result<M>> {
  try {
    return await call<Result<M>>(resolvePaths().socket, method, params, { buildId: BUILD_ID, requireBuild: BUILD_ID });
  } catch (err) {
    if (!(err instanceof DaemonUnreachable)) throw err;
  }
  const { rpc } = await import("./commands.ts");
  return rpc(method, params);
}

export async function vmList(o: { json?: boolean }) {
  const vms = await readRpc("vm.list", {});
  o.json ? printJson(processOut(), vms) : renderVmList(processOut(), vms);
}

export async function vmShow(ref: string, o: { json?: boolean }) {
  const vm = await readRpc("vm.show", { ref });
  o.json ? printJson(processOut(), vm) : renderVm(processOut(), vm);
}
