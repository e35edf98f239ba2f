import { expect, test } from "bun:test";
import { createHandler, procDeps } from "./server.ts";
import { growWork, mountedDevice, parseReidentify, reidentify, type ReidentifyDeps } from "./reidentify.ts";

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

const MOUNTS = "/dev/vda / ext4 ro 0 0\noverlay /usr/lib/banger/root overlay rw 0 0\n/dev/vdc /root ext4 rw,noatime 0 0\n";

/** A guest whose files are `files`; each read of a sysfs size takes the next of `sizes` (the interrupt arriving late). */
function recording(files: Record<string, string> = {}, sizes: string[] = []): ReidentifyDeps & { log: string[] } {
  const log: string[] = [];
  return {
    log,
    run: async (argv) => void log.push(argv.join(" ")),
    writeFile: async (p, d) => void log.push(`write ${p} ${d.split("\n")[0]}`),
    reseed: (b) => void log.push(`reseed ${b.length}`),
    readText: async (p) => (p.startsWith("/sys/") && sizes.length ? sizes.shift()! : (files[p] ?? "")),
    sleep: async (ms) => void log.push(`sleep ${ms}`),
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

test("growWorkTo adds a last step: wait until the device at /root shows the new size, then resize2fs it online", async () => {
  const gib = 2 ** 30;
  const deps = recording({ "/proc/mounts": MOUNTS }, [`${(8 * gib) / 512}\n`, `${(8 * gib) / 512}\n`, `${(9 * gib) / 512}\n`]);
  const r = await reidentify({ ...good, growWorkTo: 9 * gib }, deps);
  expect(r.done.at(-1)).toBe("grow work");
  expect(deps.log.filter((l) => l.startsWith("sleep")).length).toBe(2);
  expect(deps.log.at(-1)).toBe("resize2fs /dev/vdc");
  // Without it, nothing is read or resized.
  const plain = recording();
  expect((await reidentify(good, plain)).done).not.toContain("grow work");
  expect(plain.log.some((l) => l.includes("resize2fs"))).toBe(false);
});

test("the grow step fails clearly when the size never shows or /root is not a block device; bad sizes are refused up front", async () => {
  const deps = recording({ "/proc/mounts": MOUNTS, "/sys/class/block/vdc/size": "16\n" });
  await expect(growWork(2 ** 30, deps, 200)).rejects.toThrow("/dev/vdc still shows 8192 bytes after 200 ms, not the 1073741824");
  expect(deps.log.some((l) => l.includes("resize2fs"))).toBe(false);
  await expect(reidentify({ ...good, growWorkTo: 2 ** 30 }, recording({ "/proc/mounts": "/dev/vda / ext4 ro 0 0\n" }))).rejects.toThrow(
    "reidentify grow work: nothing is mounted at /root",
  );
  expect(() => mountedDevice("tmpfs /root tmpfs rw 0 0\n", "/root")).toThrow("/root is mounted from tmpfs, not a block device");
  expect(() => mountedDevice("/dev/../sda /root ext4 rw 0 0\n", "/root")).toThrow("not a block device");
  for (const bad of [-512, 1000, 1.5, "9G"]) {
    expect(() => parseReidentify({ ...good, growWorkTo: bad })).toThrow("growWorkTo must be a size in bytes");
  }
});
