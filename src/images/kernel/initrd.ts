/**
 * The small initrd banger makes for a distribution kernel: busybox (static) and the few
 * modules mounting the root and banger's boot glue need, taken from the image's own tree.
 */
import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { BangerError } from "../../errors.ts";
import { type CpioEntry, writeCpio } from "./cpio.ts";
import initScript from "./initrd-init.sh" with { type: "text" };

/**
 * Modules loaded before the root mounts: the virtio-mmio transport (devices found through
 * ACPI), the disks, the network card and the agent's channels (virtio-serial, vsock), overlayfs
 * for the glue's root, and the ACPI power button for a graceful stop.
 */
export const INITRD_MODULES = ["virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "vmw_vsock_virtio_transport", "overlay", "button"];

/** Where busybox-static puts its binary in a Debian tree. */
export const BUSYBOX_PATHS = ["usr/bin/busybox", "bin/busybox"];

/** Parses modules.dep into module name → [its path, then its dependencies' paths as listed]. */
export function parseModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const [path, rest] = line.split(":");
    if (!path || rest === undefined) continue;
    const name = basename(path)
      .replace(/\.ko(\.\w+)?$/, "")
      .replace(/-/g, "_");
    deps.set(name, [path, ...rest.trim().split(/\s+/).filter(Boolean)]);
  }
  return deps;
}

/** Module paths in load order (each one's dependencies first, as modprobe loads them); built-in ones are skipped. */
export function moduleLoadOrder(wanted: string[], deps: Map<string, string[]>, builtin: Set<string>): string[] {
  const order: string[] = [];
  for (const name of wanted) {
    const entry = deps.get(name);
    if (!entry) {
      if (builtin.has(name)) continue;
      throw new BangerError("failed_precondition", `the kernel has no module ${name} and does not build it in`, {
        hint: "Use a kernel with virtio-mmio, virtio-blk, virtio-net, virtio-console, vsock and overlayfs (as modules or built in)",
      });
    }
    const [path, ...needs] = entry;
    // modules.dep lists a module's dependencies so that the last one loads first
    for (const p of [...needs.reverse(), path!]) if (!order.includes(p)) order.push(p);
  }
  return order;
}

/** Names of the modules built into the kernel (modules.builtin), so wanting one of them is fine. */
function parseBuiltin(text: string): Set<string> {
  return new Set(
    text
      .split("\n")
      .filter(Boolean)
      .map((p) => basename(p).replace(/\.ko$/, "").replace(/-/g, "_")),
  );
}

/** Builds the initrd for kernel `release` from a Debian tree that has its modules and busybox-static. */
export async function buildInitrd(tree: string, release: string): Promise<Uint8Array> {
  const modDir = join(tree, "lib/modules", release);
  const depText = await readFile(join(modDir, "modules.dep"), "utf8").catch(() => {
    throw new BangerError("failed_precondition", `the image has no modules for kernel ${release} (${modDir}/modules.dep)`, {
      hint: "Install the kernel package in the image",
    });
  });
  const builtin = parseBuiltin(await readFile(join(modDir, "modules.builtin"), "utf8").catch(() => ""));
  const order = moduleLoadOrder(INITRD_MODULES, parseModulesDep(depText), builtin);
  const busybox = await firstReadable(BUSYBOX_PATHS.map((p) => join(tree, p)));
  const entries: CpioEntry[] = ["dev", "proc", "sys", "newroot", "bin", "modules"].map((d) => ({ path: d, type: "dir" as const }));
  entries.push({ path: "bin/busybox", type: "file", data: busybox, mode: 0o755 });
  for (const applet of ["sh", "mount", "umount", "insmod", "switch_root", "usleep", "cat", "cut", "tr"]) {
    entries.push({ path: `bin/${applet}`, type: "symlink", target: "busybox" });
  }
  entries.push({ path: "init", type: "file", data: initScript, mode: 0o755 });
  for (const p of order) entries.push({ path: `modules/${basename(p)}`, type: "file", data: new Uint8Array(await readFile(join(modDir, p))) });
  entries.push({ path: "modules/order", type: "file", data: order.map((p) => `${basename(p)}\n`).join("") });
  return writeCpio(entries);
}

async function firstReadable(paths: string[]): Promise<Uint8Array> {
  for (const p of paths) {
    const f = Bun.file(p);
    if (await f.exists()) return new Uint8Array(await f.arrayBuffer());
  }
  throw new BangerError("failed_precondition", `the image has no static busybox (${paths.join(" or ")})`, { hint: "Install busybox-static in the image" });
}
