import { expect, test } from "bun:test";
import { createHandler, procDeps } from "./server.ts";
import { parseReidentify, reidentify, type ReidentifyDeps } from "./reidentify.ts";

const good = {
  hostname: "web-2",
  ip: "172.30.0.7",
  prefix: 24,
  gateway: "172.30.0.1",
  mac: "06:00:ac:1e:00:07",
  machineId: "0123456789abcdef0123456789abcdef",
  hostKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
  hostKeyPub: "ssh-ed25519 AAAA web-2.vm",
  timeMs: 1_800_000_000_000,
  entropy: "ab".repeat(32),
};

function recording(): ReidentifyDeps & { log: string[] } {
  const log: string[] = [];
  return {
    log,
    run: async (argv, stdin) => void log.push([argv.join(" "), ...(stdin ?? "").split("\n").filter(Boolean)].join(" | ")),
    writeFile: async (p, d) => void log.push(`write ${p} ${d.split("\n")[0]}`),
    reseed: (b) => void log.push(`reseed ${b.length}`),
    setClock: (ms) => void log.push(`clock ${ms}`),
    reloadSshd: async () => void log.push("reload sshd"),
  };
}

test("reidentify sets clock, RNG, network, hostname, machine-id and host key, in that order, with one process", async () => {
  const deps = recording();
  const r = await reidentify(good, deps);
  expect(r.done).toEqual(["clock", "rng", "network", "hostname", "machine-id", "ssh host key"]);
  expect(deps.log).toEqual([
    "clock 1800000000000",
    "reseed 32",
    "ip -batch - | link set dev eth0 address 06:00:ac:1e:00:07 | addr flush dev eth0 | addr add 172.30.0.7/24 dev eth0" +
      " | route replace default via 172.30.0.1 dev eth0 | neigh flush all",
    "write /proc/sys/kernel/hostname web-2",
    "write /etc/hostname web-2",
    "write /etc/hosts 127.0.0.1\tlocalhost",
    "write /etc/machine-id 0123456789abcdef0123456789abcdef",
    "write /etc/ssh/ssh_host_ed25519_key -----BEGIN OPENSSH PRIVATE KEY-----",
    "write /etc/ssh/ssh_host_ed25519_key.pub ssh-ed25519 AAAA web-2.vm",
    "reload sshd",
  ]);
});

test("a failing step is named in the error and stops the rest", async () => {
  const deps = recording();
  deps.run = async () => {
    throw new Error("RTNETLINK answers: File exists");
  };
  await expect(reidentify(good, deps)).rejects.toThrow("reidentify network: RTNETLINK answers: File exists");
  expect(deps.log).toEqual(["clock 1800000000000", "reseed 32"]);
});

test("bad parameters are refused naming the field, before anything changes", async () => {
  expect(() => parseReidentify({ ...good, mac: "zz" })).toThrow("reidentify: mac must be a lowercase MAC address");
  expect(() => parseReidentify({ ...good, hostname: "a;rm -rf /" })).toThrow("hostname must be a DNS label");
  expect(() => parseReidentify({ ...good, ip: "1.2.3" })).toThrow("ip must be an IPv4 address");
  const deps = recording();
  await expect(reidentify({ ...good, entropy: "short" }, deps)).rejects.toThrow("entropy must be 64 hex characters");
  expect(deps.log).toEqual([]);
});

test("an agent serving a test socket refuses to re-identify its host", async () => {
  const handler = createHandler(procDeps("t"));
  const res = await handler({ id: 1, method: "reidentify", params: good });
  expect(res).toMatchObject({ ok: false });
  expect((res as { error: { message: string } }).error.message).toContain("does not re-identify");
});
