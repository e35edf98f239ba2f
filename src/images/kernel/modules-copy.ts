/**
 * A built image's kernel modules as extra entries for an OCI import, so an imported image
 * booted with that image's kernel can `modprobe` too (`image import --kernel-from`).
 */
import { lstatSync, readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { BangerError } from "../../errors.ts";
import type { Runner } from "../../host/runner.ts";
import type { ExtraEntry } from "../oci/import.ts";

/** Entries for /lib/modules/<release> read out of `rootfs` (an ext4 made by image build). */
export async function moduleEntries(o: { rootfs: string; release: string; workDir: string; runner: Runner }): Promise<ExtraEntry[]> {
  // a Debian image is merged-/usr: /lib is a symlink, the modules live under /usr/lib
  const r = await o.runner.run(["debugfs", "-R", `rdump /usr/lib/modules/${o.release} ${o.workDir}`, o.rootfs], { allowFailure: true });
  const top = join(o.workDir, o.release);
  if (r.code !== 0 || !lstatSync(top, { throwIfNoEntry: false })?.isDirectory()) {
    throw new BangerError("failed_precondition", `${o.rootfs} has no modules for kernel ${o.release} (/usr/lib/modules/${o.release})`, {
      hint: "Take the kernel from an image made by `banger image build`",
    });
  }
  const out: ExtraEntry[] = [];
  const walk = (dir: string, guest: string) => {
    out.push({ path: guest, type: "dir", mode: 0o755 });
    for (const name of readdirSync(dir).sort()) {
      const full = join(dir, name);
      const st = lstatSync(full);
      if (st.isDirectory()) walk(full, `${guest}/${name}`);
      else if (st.isSymbolicLink()) out.push({ path: `${guest}/${name}`, type: "symlink", target: readlinkSync(full) });
      else if (st.isFile()) out.push({ path: `${guest}/${name}`, type: "file", fromFile: full, mode: 0o644 });
    }
  };
  walk(top, `/lib/modules/${o.release}`);
  return out;
}
