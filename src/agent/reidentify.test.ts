import { expect, test } from "bun:test";
import { createHandler, procDeps } from "./server.ts";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { growWork, mountedDevice, parseReidentify, pretendReidentifyDeps, reidentify, type ReidentifyDeps } from "./reidentify.ts";

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
    run: async (argv, stdin) => void log.push([argv.join(" "), ...(stdin ?? "").split("\n").filter(Boolean)].join(" | ")),
    writeFile: async (p, d) => void log.push(`write ${p} ${d.split("\n")[0]}`),
    reseed: (b) => void log.push(`reseed ${b.length}`),
    setClock: (ms) => void log.push(`clock ${ms}`),
    reloadSshd: async () => void log.push("reload sshd"),
    readText: async (p) => (p.startsWith("/sys/") && sizes.length ? sizes.shift()! : (files[p] ?? "")),
    sleep: async (ms) => void log.push(`sleep ${ms}`),
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

test("a pretend guest's re-identify writes its files under its root and only writes its commands down", async () => {
  const root = mkdtempSync(join(tmpdir(), "banger-pretend-"));
  try {
    await reidentify(good, pretendReidentifyDeps(root));
    expect(readFileSync(join(root, "etc/hostname"), "utf8")).toBe("web-2\n");
    expect(readFileSync(join(root, "etc/machine-id"), "utf8")).toBe(`${good.machineId}\n`);
    expect(statSync(join(root, "etc/ssh/ssh_host_ed25519_key")).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(root, "commands"), "utf8")).toContain(
      "ip -batch - | link set dev eth0 address 06:00:ac:1e:00:07 | addr flush dev eth0 | addr add 172.30.0.7/24 dev eth0",
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
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

test("with growFs the guest grows /root without a process; when it fails, resize2fs does it", async () => {
  const size = [`${(9 * 2 ** 30) / 512}\n`];
  const calls: string[] = [];
  const direct = { ...recording({ "/proc/mounts": MOUNTS }, [...size]), growFs: (m: string, b: number) => void calls.push(`${m} ${b}`) };
  await growWork(9 * 2 ** 30, direct);
  expect(calls).toEqual([`/root ${9 * 2 ** 30}`]);
  expect(direct.log.some((l) => l.includes("resize2fs"))).toBe(false);
  const refused = {
    ...recording({ "/proc/mounts": MOUNTS }, [...size]),
    growFs: () => {
      throw new Error("ioctl EXT4_IOC_RESIZE_FS on /root failed");
    },
  };
  await growWork(9 * 2 ** 30, refused);
  expect(refused.log.at(-1)).toBe("resize2fs /dev/vdc");
});
