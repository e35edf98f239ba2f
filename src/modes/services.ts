import type { Database } from "bun:sqlite";
import type { Config } from "../config.ts";
import type { Paths } from "../host/paths.ts";
import type { Handlers } from "../rpc/handle.ts";

export interface ServiceDeps {
  paths: Paths;
  config: Config;
  db: Database;
  log(msg: string): void;
}

/** The daemon's services and the RPC handlers they provide. */
export interface Services {
  handlers: Handlers;
  vmCount(): number;
  close(): Promise<void>;
}

/** Builds the real services from the composition root's dependencies. */
export async function buildServices(deps: ServiceDeps): Promise<Services> {
  return {
    handlers: {},
    vmCount: () => 0,
    close: async () => {},
  };
}
