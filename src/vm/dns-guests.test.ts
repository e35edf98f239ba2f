import { describe, expect, test } from "bun:test";
import type { VmRow } from "../store/vms.ts";
import { vmDnsGuests } from "./dns-guests.ts";

const row = (name: string, ip: string, extra: Partial<VmRow> = {}): VmRow =>
  ({ id: `id-${name}`, name, ip, nat: false, net: "", net_group: "", ...extra }) as VmRow;

describe("vmDnsGuests", () => {
  const rows = [
    row("web", "172.30.0.2", { state: "running", nat: true, net_group: "dev" }),
    row("db", "172.30.0.3", { state: "running", net: "allow:svc.test" }),
    row("off", "172.30.0.4", { state: "stopped" }),
    row("boot", "172.30.0.5", { state: "creating" }),
  ];
  const records = new Map([
    ["web", "172.30.0.2"],
    ["db", "172.30.0.3"],
  ]);
  const allowed: unknown[] = [];
  const guests = vmDnsGuests({ vms: { list: () => rows }, records: () => records, network: { allowResolved: async (...a) => void allowed.push(a) } });

  test("a running VM is found by its address, with policy and group from its row", () => {
    expect(guests.at("172.30.0.2")).toEqual({ id: "id-web", name: "web", policy: { mode: "nat" }, groups: ["dev"] });
    expect(guests.at("172.30.0.3")?.policy).toEqual({ mode: "allow", rules: [{ kind: "domain", name: "svc.test" }] });
    expect(guests.at("172.30.0.3")?.groups).toEqual([]);
  });

  test("a stopped VM's address, or any other, is nobody", () => {
    expect(guests.at("172.30.0.4")).toBeNull();
    expect(guests.at("172.30.0.1")).toBeNull();
    expect(guests.named("off")).toBeNull();
  });

  test("a VM still booting may ask (its policy applies) but has no .vm name yet", () => {
    expect(guests.at("172.30.0.5")?.name).toBe("boot");
    expect(guests.named("boot")).toBeNull();
  });

  test("named finds running VMs by record key; allowResolved goes to the network", async () => {
    expect(guests.named("db")?.id).toBe("id-db");
    await guests.allowResolved("id-db", ["198.18.0.2"], 60);
    expect(allowed).toEqual([["id-db", ["198.18.0.2"], 60]]);
  });
});
