import type { Handlers } from "../rpc/handle.ts";
import type { VmRow } from "../store/vms.ts";
import type { StatsPoller } from "../vm/reconcile.ts";
import type { VmService } from "../vm/service.ts";

/** RPC handlers for the `vm` commands. */
export function vmHandlers(svc: VmService, poller: StatsPoller): Handlers {
  // async: a bad ref rejects (a streaming answer reports it) instead of throwing before the stream starts.
  const one = async <T>(ref: string, fn: (vm: VmRow) => Promise<T>) => svc.withVm(svc.find(ref).id, fn);
  return {
    "vm.create": (p, ctx) => svc.create(p, ctx),
    "vm.start": (p, ctx) => svc.fan(p.refs, (vm) => svc.start(vm, ctx, { cold: p.cold })),
    "vm.pause": (p) => svc.fan(p.refs, (vm) => svc.pause(vm)),
    "vm.resume": (p, ctx) => svc.fan(p.refs, (vm) => svc.resume(vm, ctx, { cold: p.cold })),
    "vm.suspend": (p) => svc.fan(p.refs, (vm) => svc.suspend(vm)),
    "vm.fork": (p, ctx) => one(p.ref, (vm) => svc.fork(vm, { name: p.name, count: p.count }, ctx)),
    "vm.snapshot.create": (p) => one(p.ref, async (vm) => ({ name: vm.name, message: await svc.snapshotCreate(vm, p.name, Boolean(p.memory)) })),
    "vm.snapshot.list": async (p) => svc.snapshotList(svc.find(p.ref)),
    "vm.snapshot.restore": (p, ctx) => one(p.ref, async (vm) => ({ name: vm.name, message: await svc.snapshotRestore(vm, p.name, ctx) })),
    "vm.snapshot.delete": (p) => one(p.ref, async (vm) => ({ name: vm.name, message: await svc.snapshotDelete(vm, p.name) })),
    "vm.stop": (p) => svc.fan(p.refs, (vm) => svc.stop(vm)),
    "vm.restart": (p, ctx) => svc.fan(p.refs, (vm) => svc.restart(vm, ctx)),
    "vm.kill": (p) => svc.fan(p.refs, (vm) => svc.kill(vm)),
    "vm.delete": (p) => svc.fan(p.refs, (vm) => svc.delete(vm, Boolean(p.force))),
    "vm.set": (p) => svc.fan(p.refs, (vm) => svc.set(vm, p)),
    "vm.list": async () => svc.list(),
    "cache.list": async () => svc.cacheList(),
    "cache.prune": async (p) => svc.cachePrune(p.all),
    "vm.show": async (p) => svc.view(svc.find(p.ref)),
    "vm.logs": async (p) => svc.logs(svc.find(p.ref), p.lines ?? 200),
    "vm.stats": async (p) => poller.stats(p.ref ? [svc.find(p.ref)] : svc.rows()),
    "vm.health": (p) => one(p.ref, (vm) => svc.health(vm)),
    "vm.ports": (p) => one(p.ref, (vm) => svc.ports(vm)),
    "vm.ssh-info": async (p) => svc.sshInfo(svc.find(p.ref)),
  };
}
