import type { Database } from "bun:sqlite";
import type { Config } from "../config.ts";
import type { Paths } from "../host/paths.ts";
import type { Runner } from "../host/runner.ts";
import type { Handlers } from "../rpc/handle.ts";
import type { VmService } from "../vm/service.ts";

export interface ArtifactDeps {
  paths: Paths;
  config: Config;
  db: Database;
  log(msg: string): void;
  runner: Runner;
  vms: VmService;
}

/** RPC handlers for `kernel` and `image`. */
export function artifactHandlers(_deps: ArtifactDeps): Handlers {
  return {};
}
