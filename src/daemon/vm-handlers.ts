import { existsSync, readFileSync } from "node:fs";
import { listGoldens, pruneGoldens } from "../vm/warm.ts";
import { AgentClient } from "../agent/client.ts";
import { BangerError } from "../errors.ts";
import { tailRotated } from "../host/tail.ts";
import type { Handlers } from "../rpc/handle.ts";
import type { VmRow } from "../store/vms.ts";
import { dirOf, knownHandle, AGENT_PORT } from "../vm/runtime.ts";
import { buildPortsView } from "../vm/ports-view.ts";
import { webProbe } from "../vm/port-probe.ts";
import type { StatsPoller } from "../vm/reconcile.ts";
import type { VmService } from "../vm/service.ts";

/** The end of a log (and of its rotated `.1` when needed); `--lines` beyond 100,000 or 4 MiB is cut there. */
function tail(path: string, lines: number): string {
  return tailRotated(path, Math.min(lines, 100_000));
}

/** The agent client of a running VM (kept open: virtio-serial allows one host connection). */
export function agentOf(svc: VmService, vm: VmRow): AgentClient {
  if (vm.state !== "running") throw new BangerError("failed_precondition", `VM ${vm.name} is ${vm.state}`, { hint: `Start it: banger vm start ${vm.name}` });
  let client = svc.rt.agents.get(vm.id);
  if (!client) {
    const handle = knownHandle(svc.rt, vm, dirOf(svc.deps, vm.id));
    if (!handle) throw new BangerError("failed_precondition", `VM ${vm.name} has no running VMM`);
    const driver = svc.deps.drivers(vm.vmm);
    client = new AgentClient(() => driver.connectAgent(handle, AGENT_PORT));
    svc.rt.agents.set(vm.id, client);
  }
  return client;
}

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
    "vm.restart": (p, ctx) => svc.fan(p.refs, async (vm) => `${await svc.stop(vm)}; ${await svc.start(svc.deps.vms.get(vm.id)!, ctx)}`),
    "vm.kill": (p) => svc.fan(p.refs, (vm) => svc.kill(vm)),
    "vm.delete": (p) => svc.fan(p.refs, (vm) => svc.delete(vm, Boolean(p.force))),
    "vm.set": (p) => svc.fan(p.refs, (vm) => svc.set(vm, p)),
    "vm.list": async () => svc.list(),
    "cache.list": async () => listGoldens(svc.deps),
    "cache.prune": async (p) => pruneGoldens(svc.deps, { all: p.all }),
    "vm.show": async (p) => svc.view(svc.find(p.ref)),
    "vm.logs": async (p) => {
      const vm = svc.find(p.ref);
      const dir = dirOf(svc.deps, vm.id);
      return {
        name: vm.name,
        console_log: dir.consoleLog,
        vmm_log: dir.vmmLog,
        console: tail(dir.consoleLog, p.lines ?? 200),
        vmm: tail(dir.vmmLog, p.lines ?? 200),
      };
    },
    "vm.stats": async (p) => {
      const vms = p.ref ? [svc.find(p.ref)] : svc.deps.vms.list();
      return Promise.all(
        vms.map(async (vm) =>
          vm.state === "running"
            ? (poller.latest.get(vm.id) ?? (await poller.sample(vm)))
            : {
                name: vm.name,
                state: vm.state,
                pid: null,
                cpu_percent: null,
                rss_bytes: null,
                disk_used_bytes: null,
                disk_bytes: vm.disk_bytes,
                uptime_s: null,
                sampled_at: new Date().toISOString(),
              },
        ),
      );
    },
    // banger's name for the VM comes last: nothing in an agent's answer can rename it.
    "vm.health": (p) => one(p.ref, async (vm) => ({ ...(await agentOf(svc, vm).health({ timeoutMs: 5000 })), name: vm.name })),
    "vm.ports": (p) =>
      one(p.ref, async (vm) => {
        const { sockets, dropped } = await agentOf(svc, vm).ports({ timeoutMs: 5000 });
        return buildPortsView(sockets, { vmName: vm.name, probeHost: vm.ip, probe: webProbe(), dropped });
      }),
    "vm.ssh-info": async (p) => {
      const vm = svc.find(p.ref);
      const dir = dirOf(svc.deps, vm.id);
      const key = await svc.deps.sshKey();
      return { name: vm.name, state: vm.state, ip: vm.ip, user: "root", key: key.path, host_key: readFileSync(`${dir.hostKey}.pub`, "utf8").trim() };
    },
  };
}
