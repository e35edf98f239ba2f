import { BangerError } from "../../errors.ts";

/** Ownership, permission bits (including setuid/setgid/sticky) and mtime of one inode. */
export interface Meta {
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  /** Extended attributes to set, each value stored in a blob file (debugfs reads it with ea_set -f). */
  xattrs?: Array<{ name: string; blob: string }>;
}

/** A non-directory inode; hard links are several tree nodes sharing one Leaf object. */
export type Leaf = { kind: "file"; meta: Meta; blob: string; size: number } | { kind: "symlink"; meta: Meta; target: string } | { kind: "fifo"; meta: Meta };

/** A directory with its children by name. */
export interface Dir {
  kind: "dir";
  meta: Meta;
  children: Map<string, Node>;
}

/** A node of the flattened image tree. */
export type Node = Dir | { kind: "leaf"; leaf: Leaf };

const MAX_HOPS = 40;
const MAX_PATH_BYTES = 3000;
const enc = new TextEncoder();

function reject(message: string, hint?: string): never {
  throw new BangerError("invalid_argument", message, { hint: hint ?? "The image is unsafe or malformed; rebuild it without this entry." });
}

/** True when a string holds a character the ext4 tools (and debugfs scripts) cannot carry. */
export function hasControlChar(s: string): boolean {
  return /[\u0000-\u001f\u007f]/.test(s);
}

/**
 * Splits an archive member name into safe components, rejecting absolute paths, `..`,
 * control characters and over-long names. The empty list means the image root.
 */
export function safeParts(path: string, what = "entry"): string[] {
  const shown = JSON.stringify(path);
  if (hasControlChar(path)) reject(`${what} ${shown} has a control character (newline, carriage return or NUL) in its name, which ext4 tools cannot encode`);
  if (path.startsWith("/")) reject(`${what} ${shown} is an absolute path; image layers must use relative paths`);
  if (enc.encode(path).length > MAX_PATH_BYTES) reject(`${what} ${shown} is longer than ${MAX_PATH_BYTES} bytes`);
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  for (const p of parts) {
    if (p === "..") reject(`${what} ${shown} has a ".." component that points outside the image`);
    if (enc.encode(p).length > 255) reject(`${what} ${shown} has a name component longer than 255 bytes`);
  }
  return parts;
}

/** The flattened filesystem of an image: layers applied in order, links resolved inside the root only. */
export class FlatTree {
  readonly root: Dir = { kind: "dir", meta: { mode: 0o755, uid: 0, gid: 0, mtime: 0 }, children: new Map() };

  /**
   * Walks to the directory named by `parts`, following symlinks the way the guest kernel
   * would, but rejecting any that climb above the root. Missing directories are created
   * (mode 0755, root) when `create` is set, else the walk returns undefined.
   */
  walkDir(parts: string[], create: boolean, entry: string): Dir | undefined {
    let stack: Dir[] = [this.root];
    const queue = [...parts];
    let hops = 0;
    while (queue.length) {
      const name = queue.shift()!;
      if (name === "" || name === ".") continue;
      if (name === "..") {
        if (stack.length === 1) reject(`entry ${JSON.stringify(entry)} is written through a symlink that points outside the image root`);
        stack.pop();
        continue;
      }
      const cur = stack[stack.length - 1]!;
      let child = cur.children.get(name);
      if (!child) {
        if (!create) return undefined;
        child = { kind: "dir", meta: { mode: 0o755, uid: 0, gid: 0, mtime: 0 }, children: new Map() };
        cur.children.set(name, child);
      }
      if (child.kind === "dir") {
        stack.push(child);
      } else if (child.leaf.kind === "symlink") {
        if (++hops > MAX_HOPS) reject(`entry ${JSON.stringify(entry)} goes through more than ${MAX_HOPS} symlinks`);
        const target = child.leaf.target;
        if (target.startsWith("/")) stack = [this.root];
        queue.unshift(...target.split("/"));
      } else {
        reject(`entry ${JSON.stringify(entry)} has a parent ${JSON.stringify(name)} that is not a directory`);
      }
    }
    return stack[stack.length - 1];
  }

  /** Adds or replaces a directory; an existing directory keeps its children and takes the new metadata. */
  putDir(path: string, meta: Meta): void {
    const parts = safeParts(path);
    if (parts.length === 0) {
      this.root.meta = meta;
      return;
    }
    const parent = this.walkDir(parts.slice(0, -1), true, path)!;
    const name = parts[parts.length - 1]!;
    const existing = parent.children.get(name);
    if (existing?.kind === "dir") existing.meta = meta;
    else parent.children.set(name, { kind: "dir", meta, children: new Map() });
  }

  /** Adds or replaces a non-directory at `path` (replacing a directory drops its subtree, as overlayfs would show). */
  putLeaf(path: string, leaf: Leaf): void {
    const parts = safeParts(path);
    if (parts.length === 0) reject(`entry ${JSON.stringify(path)} would replace the image root with a non-directory`);
    if (leaf.kind === "symlink") {
      if (hasControlChar(leaf.target)) reject(`symlink ${JSON.stringify(path)} has a control character in its target ${JSON.stringify(leaf.target)}`);
      if (leaf.target === "" || enc.encode(leaf.target).length > MAX_PATH_BYTES) reject(`symlink ${JSON.stringify(path)} has an empty or over-long target`);
    }
    const parent = this.walkDir(parts.slice(0, -1), true, path)!;
    parent.children.set(parts[parts.length - 1]!, { kind: "leaf", leaf });
  }

  /** Finds the node at `path` without following a final symlink; undefined when absent. */
  lookup(path: string): Node | undefined {
    const parts = safeParts(path);
    if (parts.length === 0) return this.root;
    const parent = this.walkDir(parts.slice(0, -1), false, path);
    return parent?.children.get(parts[parts.length - 1]!);
  }

  /** Makes `path` another name of the inode at `target` (a tar hard link). */
  link(path: string, target: string): void {
    safeParts(target, `hard link ${JSON.stringify(path)} has a target`);
    const node = this.lookup(target);
    if (!node) reject(`hard link ${JSON.stringify(path)} points to ${JSON.stringify(target)}, which does not exist in this or a lower layer`);
    if (node.kind === "dir") reject(`hard link ${JSON.stringify(path)} points to the directory ${JSON.stringify(target)}`);
    this.putLeaf(path, node.leaf);
  }

  /** Deletes `path` and everything below it (a whiteout); absent paths are fine. */
  remove(path: string): void {
    const parts = safeParts(path);
    if (parts.length === 0) return;
    const parent = this.walkDir(parts.slice(0, -1), false, path);
    parent?.children.delete(parts[parts.length - 1]!);
  }

  /** Empties the directory at `path` (an opaque whiteout hides everything lower layers put there). */
  clearDir(path: string): void {
    const parts = safeParts(path);
    const dir = parts.length === 0 ? this.root : this.walkDir(parts, false, path);
    dir?.children.clear();
  }
}
