import type { Config } from "../config.ts";
import type { Paths } from "../host/paths.ts";
import type { Runner } from "../host/runner.ts";
import type { ArtifactStore } from "../store/artifacts.ts";
import type { CallContext } from "../vm/model.ts";

/** What the image and kernel services need. */
export interface ArtifactDeps {
  paths: Pick<Paths, "imagesDir" | "kernelsDir">;
  config: Config;
  store: ArtifactStore;
  runner: Runner;
  /** The names of the VMs using an image or kernel: an artifact in use is not deleted. */
  usersOf(what: { image?: string; kernel?: string }): string[];
  /** The guest agent executable put into images, or null when it is not beside banger. */
  agentBinary(): string | null;
}

/** Reports named stages as progress: each new stage ends the one before it with its time. */
export function stageReporter(call: CallContext) {
  let current: { stage: string; at: number } | null = null;
  const onStage = (stage: string) => {
    if (current) call.progress({ stage: current.stage, status: "done", elapsedMs: Math.round(performance.now() - current.at) });
    current = { stage, at: performance.now() };
    call.progress({ stage, status: "start" });
  };
  return { onStage, started: () => current !== null };
}
