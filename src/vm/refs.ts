import { BangerError, type ErrorCode } from "../errors.ts";
import type { VmRow } from "../store/vms.ts";

/** Resolves a name, id or unique id prefix against one snapshot of the VMs. */
export function resolveRef(ref: string, vms: VmRow[]): VmRow {
  const byName = vms.find((v) => v.name === ref);
  if (byName) return byName;
  const byId = vms.find((v) => v.id === ref);
  if (byId) return byId;
  const prefixed = vms.filter((v) => v.id.startsWith(ref));
  if (prefixed.length === 1) return prefixed[0]!;
  if (prefixed.length > 1) {
    throw new BangerError("invalid_argument", `"${ref}" is ambiguous: it matches ${prefixed.map((v) => `${v.name} (${v.id})`).join(", ")}`, {
      hint: "Use the full name or a longer id prefix.",
      details: { candidates: prefixed.map((v) => v.name) },
    });
  }
  const close = similar(ref, vms);
  const candidates = close.length ? close : vms.map((v) => v.name).slice(0, 10);
  throw new BangerError(
    "not_found",
    `no VM "${ref}"${close.length ? `; did you mean ${close.join(", ")}?` : candidates.length ? `; VMs: ${candidates.join(", ")}` : ""}`,
    { hint: "`banger vm list` shows the VMs.", details: { candidates } },
  );
}

/** Names close to a typo: shared prefix or small edit distance. */
function similar(ref: string, vms: VmRow[]): string[] {
  return vms
    .map((v) => v.name)
    .filter((n) => n.startsWith(ref.slice(0, 2)) || distance(n, ref) <= 2)
    .slice(0, 5);
}

function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length]![b.length]!;
}

/** The outcome for one ref of a multi-ref command. */
export interface FanoutResult {
  ref: string;
  ok: boolean;
  name?: string;
  id?: string;
  message: string;
  error?: { code: ErrorCode; message: string; hint?: string };
}

/**
 * Dedupes refs, resolves them all from one snapshot, runs the action for every valid target
 * concurrently and reports results in first-seen order. The same VM named twice runs once.
 */
export async function fanout(refs: string[], snapshot: VmRow[], action: (vm: VmRow) => Promise<string>): Promise<FanoutResult[]> {
  const seenRefs = [...new Set(refs)];
  const seenIds = new Set<string>();
  const jobs = seenRefs.map(async (ref): Promise<FanoutResult | null> => {
    let vm: VmRow;
    try {
      vm = resolveRef(ref, snapshot);
    } catch (err) {
      const e = err as BangerError;
      return { ref, ok: false, message: e.message, error: { code: e.code, message: e.message, hint: e.hint } };
    }
    if (seenIds.has(vm.id)) return null;
    seenIds.add(vm.id);
    try {
      return { ref, ok: true, name: vm.name, id: vm.id, message: await action(vm) };
    } catch (err) {
      const e = err as BangerError;
      return { ref, ok: false, name: vm.name, id: vm.id, message: e.message, error: { code: e.code ?? "internal", message: e.message, hint: e.hint } };
    }
  });
  return (await Promise.all(jobs)).filter((r): r is FanoutResult => r !== null);
}
