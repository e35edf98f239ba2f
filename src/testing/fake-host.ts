import type { RunOptions, RunResult } from "../host/runner.ts";
import { RecordingRunner } from "./recording-runner.ts";
import type { HostNetConfig } from "../host/network/config.ts";
import { NAT_SET, nftBaseChains } from "../host/network/nft.ts";

// Test fixtures for the host-network unit tests: a recording runner that answers from a
// small model of the host's links, sysctl and firewall state.

/** A RecordingRunner that also keeps stdin, answering from a small model of the host. */
export class FakeHost extends RecordingRunner {
  readonly stdin: Array<string | undefined> = [];
  constructor(answer: (argv: string[]) => Partial<RunResult> | undefined) {
    super(answer);
  }
  override async run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    this.stdin.push(opts.stdin === undefined ? undefined : String(opts.stdin));
    return super.run(argv, opts);
  }
  /** The calls that change the host (reads filtered out), joined for readability. */
  mutations(): string[] {
    const reads = /^(sudo -n )?(ip -j|sysctl -n|nft -j list|nft list|iptables -w -t \S+ -S|iptables -w -S|cat |test -e|systemctl is-enabled)/;
    return this.calls.map((c) => c.join(" ")).filter((c) => !reads.test(c));
  }
}

export interface HostModel {
  links?: Array<{ ifname: string; kind?: string; master?: string; up?: boolean; alias?: string }>;
  taps?: Array<{ ifname: string; user: number; group: number }>;
  addrs?: string[];
  forwarding?: "0" | "1";
  /** `nft -j list table inet …` output (the bridge table is answered from nftBridge). */
  nftTable?: string | null;
  nftBridge?: string | null;
  nft?: boolean;
  acceptRa?: "0" | "1";
}

export function model(m: HostModel): (argv: string[]) => Partial<RunResult> | undefined {
  return (full) => {
    const argv = full[0] === "sudo" ? full.slice(2) : full;
    const cmd = argv.join(" ");
    if (cmd === "ip -j -d link show") {
      const links = (m.links ?? []).map((l) => ({
        ifname: l.ifname,
        flags: l.up ? ["UP"] : [],
        master: l.master,
        ifalias: l.alias,
        linkinfo: l.kind ? { info_kind: l.kind } : undefined,
      }));
      return { stdout: JSON.stringify(links) };
    }
    if (cmd === "ip -j tuntap show") return { stdout: JSON.stringify(m.taps ?? []) };
    if (cmd.startsWith("ip -j -4 addr show")) {
      const addr_info = (m.addrs ?? []).map((a) => ({ local: a.split("/")[0], prefixlen: Number(a.split("/")[1]) }));
      return { stdout: JSON.stringify([{ addr_info }]) };
    }
    if (cmd === "sysctl -n net.ipv4.ip_forward") return { stdout: `${m.forwarding ?? "0"}\n` };
    if (cmd === "nft list ruleset") return m.nft === false ? { code: 1, stderr: "nft: not supported" } : {};
    if (cmd.startsWith("sysctl -n net.ipv6.conf.")) return { stdout: `${m.acceptRa ?? "1"}\n` };
    if (cmd.startsWith("nft -j list table inet")) return m.nftTable ? { stdout: m.nftTable } : { code: 1, stderr: "Error: No such file or directory" };
    if (cmd.startsWith("nft -j list table bridge")) {
      const json = m.nftBridge === undefined && m.nftTable ? nftJson(cfg, [], "bridge") : m.nftBridge;
      return json ? { stdout: json } : { code: 1, stderr: "Error: No such file or directory" };
    }
    if (/^iptables -w (-t \S+ )?-S BANGER/.test(cmd)) return { code: 1, stderr: "iptables: No chain/target/match by that name." };
    return undefined;
  };
}

export const cfg: HostNetConfig = { bridge: "banger0", subnet: "172.30.0.1/24", tapCount: 2, owner: { uid: 1000, gid: 1000 }, firewall: "nftables" };

/** The nft JSON of a complete table of one family, as nft itself prints it, optionally with NAT elements. */
export function nftJson(c: HostNetConfig, elems: unknown[] = [], family: "inet" | "bridge" = "inet"): string {
  const items: unknown[] = [];
  const chains = nftBaseChains(c).filter((ch) => ch.family === family);
  for (const ch of chains) items.push({ chain: { family, name: ch.name, hook: ch.hook } });
  const sets = family === "inet" ? [NAT_SET, "peer_ips"] : ["vm_ports", "peers"];
  for (const name of sets) items.push({ set: { family, name, elem: name === NAT_SET ? elems : [] } });
  items.push({ map: { family, name: family === "inet" ? "egress" : "ports" } });
  for (const ch of chains) for (const [, comment] of ch.rules) items.push({ rule: { family, chain: ch.name, comment } });
  return JSON.stringify({ nftables: items });
}

export const setUpHost: HostModel = {
  links: [
    { ifname: "banger0", kind: "bridge", up: true, alias: "banger ip_forward_was=0" },
    { ifname: "bgr0t0", kind: "tun", master: "banger0", up: true },
    { ifname: "bgr0t1", kind: "tun", master: "banger0", up: true },
  ],
  taps: [
    { ifname: "bgr0t0", user: 1000, group: 1000 },
    { ifname: "bgr0t1", user: 1000, group: 1000 },
  ],
  addrs: ["172.30.0.1/24"],
  forwarding: "1",
  acceptRa: "0",
  nftTable: nftJson(cfg),
};
