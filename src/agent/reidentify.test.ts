import { expect, test } from "bun:test";
import { createHandler, procDeps } from "./server.ts";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseReidentify, pretendReidentifyDeps, reidentify, type ReidentifyDeps } from "./reidentify.ts";

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
    run: async (argv) => void log.push(argv.join(" ")),
    writeFile: async (p, d) => void log.push(`write ${p} ${d.split("\n")[0]}`),
    reseed: (b) => void log.push(`reseed ${b.length}`),
  };
}

test("reidentify sets clock, RNG, MAC, address, neighbours, hostname, machine-id and host key, in that order", async () => {
  const deps = recording();
  const r = await reidentify(good, deps);
  expect(r.done).toEqual(["clock", "rng", "mac", "address", "neighbours", "hostname", "machine-id", "ssh host key"]);
  expect(deps.log).toContain("date -u -s @1800000000.000");
  expect(deps.log).toContain("reseed 32");
  expect(deps.log).toContain("ip link set dev eth0 address 06:00:ac:1e:00:07");
  expect(deps.log).toContain("ip addr add 172.30.0.7/24 dev eth0");
  expect(deps.log).toContain("ip route replace default via 172.30.0.1 dev eth0");
  expect(deps.log).toContain("ip neigh flush all");
  expect(deps.log).toContain("write /etc/machine-id 0123456789abcdef0123456789abcdef");
  expect(deps.log).toContain("write /etc/ssh/ssh_host_ed25519_key.pub ssh-ed25519 AAAA web-2.vm");
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

test("a pretend guest's re-identify writes its files under its root and only writes its commands down", async () => {
  const root = mkdtempSync(join(tmpdir(), "banger-pretend-"));
  try {
    await reidentify(good, pretendReidentifyDeps(root));
    expect(readFileSync(join(root, "etc/hostname"), "utf8")).toBe("web-2\n");
    expect(readFileSync(join(root, "etc/machine-id"), "utf8")).toBe(`${good.machineId}\n`);
    expect(statSync(join(root, "etc/ssh/ssh_host_ed25519_key")).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(root, "commands"), "utf8")).toContain("ip addr add 172.30.0.7/24 dev eth0\n");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
