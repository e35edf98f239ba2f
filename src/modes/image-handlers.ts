import { rmSync } from "node:fs";
import { BangerError } from "../errors.ts";
import type { Handlers } from "../rpc/handle.ts";
import type { ArtifactStore } from "../store/artifacts.ts";
import type { ArtifactDeps } from "./artifact-handlers.ts";

/** RPC handlers for `image`. */
export function imageHandlers(deps: ArtifactDeps & { store: ArtifactStore }): Handlers {
  const { store } = deps;
  const must = (name: string) => {
    const i = store.image(name);
    if (!i) throw new BangerError("not_found", `image ${name} is not present`, { hint: "`banger image list` shows the images; `banger image build` makes the default one." });
    return i;
  };
  return {
    "image.list": async () => store.images(),
    "image.show": async (p) => must(p.name),
    "image.delete": async (p) => {
      const image = must(p.name);
      const users = deps.vms.deps.vms.list().filter((v) => v.image === p.name).map((v) => v.name);
      if (users.length) throw new BangerError("failed_precondition", `image ${p.name} is used by ${users.join(", ")}`, { hint: `Delete those VMs first (banger vm delete ${users.join(" ")}).` });
      rmSync(image.rootfs_path, { force: true });
      rmSync(image.work_seed_path, { force: true });
      store.deleteImage(p.name);
      return { deleted: p.name };
    },
  };
}
