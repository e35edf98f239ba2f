/**
 * Builds a golden image with mmdebstrap, then boots two VMs from the one read-only base
 * with QEMU microvm (TCG) using the four-drive layout and the boot glue, and checks them
 * over SSH (user-mode networking, loopback only) and the serial console.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hostRunner } from "../../src/host/runner.ts";
import { buildImage, IMAGE_PACKAGES, type BuiltImage } from "../../src/images/build.ts";
import { buildConfigDrive } from "../../src/images/config-drive.ts";
import { createOverlayDisk, createWorkDisk } from "../../src/images/disks.ts";
import { AGENT_UNIT, glueBootArgs, INIT_SCRIPT, SSHD_DROP_IN } from "../../src/images/glue/index.ts";
import { importKernel } from "../../src/images/kernels.ts";
import { hasBin, isRoot, projectRoot, sharedDir, testCacheDir, testNeeds } from "../../src/testing/skip.ts";
import { rawMicrovmArgv, SSHD_HARDENED } from "../../src/testing/guest-fixtures.ts";

const needs: Array<[boolean, string]> = [
  [isRoot, "image build runs mmdebstrap in root mode (run as root)"],
  [hasBin("mmdebstrap"), "mmdebstrap not installed"],
  [hasBin("qemu-system-x86_64"), "qemu-system-x86 not installed"],
  [hasBin("mkfs.ext4"), "e2fsprogs not installed"],
  [hasBin("ssh") && hasBin("ssh-keygen"), "openssh-client not installed"],
  [existsSync(join(sharedDir, "kernels/vmlinux-6.1.192.zst")), "fixture kernel missing"],
];

const GiB = 1024 ** 3;
const tmp = mkdtempSync(join(tmpdir(), "banger-image-e2e-"));
const procs: Array<ReturnType<typeof Bun.spawn>> = [];
afterAll(async () => {
  for (const p of procs) p.kill("SIGKILL");
  await Promise.all(procs.map((p) => p.exited));
  rmSync(tmp, { recursive: true, force: true });
});

const sha256 = async (path: string) => {
  const h = new Bun.CryptoHasher("sha256");
  for await (const c of Bun.file(path).stream() as unknown as AsyncIterable<Uint8Array>) h.update(c);
  return h.digest("hex");
};

/** The agent to bake in: the real one when built, else a stand-in that just stays up. */
async function agentBinary(): Promise<string> {
  const real = join(projectRoot, "dist/banger-agent");
  if (existsSync(real)) return real;
  const standin = join(tmp, "banger-agent");
  await Bun.write(standin, '#!/bin/sh\n[ "$1" = --version ] && { echo standin-0.0.1; exit 0; }\nexec sleep infinity\n');
  await hostRunner.run(["chmod", "0755", standin]);
  return standin;
}

/** Builds the image once per glue/package/agent content; the cache keeps dev reruns fast. */
async function cachedImage(): Promise<BuiltImage & { buildMs: number }> {
  const agent = await agentBinary();
  const key = new Bun.CryptoHasher("sha256")
    .update(INIT_SCRIPT + AGENT_UNIT + SSHD_DROP_IN + IMAGE_PACKAGES.join(",") + (await Bun.file(join(import.meta.dir, "../../src/images/build.ts")).text()))
    .update(await Bun.file(agent).arrayBuffer())
    .digest("hex")
    .slice(0, 16);
  const outDir = join(testCacheDir, "images", `golden-${key}`);
  const meta = join(outDir, "meta.json");
  if (existsSync(meta)) return { ...(await Bun.file(meta).json()), buildMs: 0 };
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(join(testCacheDir, "images"), { recursive: true });
  const t0 = performance.now();
  const built = await buildImage(
    { name: "golden", outDir, agentBinary: agent, onStage: (s) => console.log(`image build: ${s} at ${((performance.now() - t0) / 1000).toFixed(1)} s`) },
    { runner: hostRunner, uid: 0, which: Bun.which },
  );
  await Bun.write(meta, JSON.stringify(built));
  return { ...built, buildMs: performance.now() - t0 };
}

async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

interface Vm {
  name: string;
  dir: string;
  port: number;
  proc?: ReturnType<typeof Bun.spawn>;
  console: string;
}

let image: BuiltImage;
let kernel: string;
let clientKey: string;

async function prepareVm(name: string): Promise<Vm> {
  const dir = join(tmp, name);
  mkdirSync(dir);
  const deps = { runner: hostRunner };
  await createOverlayDisk(join(dir, "overlay.ext4"), 8 * GiB, deps);
  await createWorkDisk({ seed: image.workSeed, path: join(dir, "work.ext4"), sizeBytes: 4 * GiB }, deps);
  await hostRunner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", `root@${name}`, "-f", join(dir, "hostkey")]);
  const vm = { name, dir, port: await freePort(), console: join(dir, "console.log") };
  const pub = (await Bun.file(join(dir, "hostkey.pub")).text()).trim();
  await Bun.write(join(dir, "known_hosts"), `[127.0.0.1]:${vm.port} ${pub.split(" ").slice(0, 2).join(" ")}\n`);
  return vm;
}

async function buildDrive(vm: Vm): Promise<void> {
  const syncDir = join(tmp, "sync-src");
  if (!existsSync(syncDir)) {
    mkdirSync(join(syncDir, "sub"), { recursive: true });
    await Bun.write(join(syncDir, "sub", "run.sh"), "#!/bin/sh\necho synced\n");
    await hostRunner.run(["chmod", "0750", join(syncDir, "sub", "run.sh")]);
  }
  await buildConfigDrive(
    join(vm.dir, "config.ext4"),
    {
      hostname: vm.name,
      authorizedKeys: [(await Bun.file(`${clientKey}.pub`).text()).trim()],
      hostKey: { private: await Bun.file(join(vm.dir, "hostkey")).text(), public: await Bun.file(join(vm.dir, "hostkey.pub")).text() },
      resolvConf: "nameserver 10.0.2.3\n",
      gitconfig: "[user]\n\tname = Test User\n\temail = test@example.com\n",
      files: [
        { guestPath: "~/bin/tool", content: "#!/bin/sh\necho tool\n", mode: 0o755 },
        { guestPath: "~/.config/secret", content: "s3cret" },
        { guestPath: "~/synced", hostPath: syncDir },
      ],
      env: { BANGER_VM_NAME: vm.name },
    },
    { runner: hostRunner },
  );
}

function boot(vm: Vm): void {
  const drive = (id: string, file: string, ro: boolean) => [
    "-drive",
    `if=none,id=${id},file=${file},format=raw${ro ? ",readonly=on" : ""}`,
    "-device",
    `virtio-blk-device,drive=${id}`,
  ];
  // Under TCG the guest TSC runs at the host's rate; telling the kernel skips PIT calibration,
  // which hangs or fails when the host is busy.
  const mhz = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1];
  const tsc = mhz ? ` tsc_early_khz=${Math.round(Number(mhz) * 1000)}` : "";
  const args = glueBootArgs({ guestIp: "10.0.2.15", gatewayIp: "10.0.2.2", netmask: "255.255.255.0", hostname: vm.name });
  vm.proc = Bun.spawn(
    [
      ...rawMicrovmArgv(kernel, `console=ttyS0 reboot=k panic=1 root=/dev/vda ro ${args}${tsc}`),
      "-serial",
      `file:${vm.console}`,
      ...drive("vda", image.rootfs, true),
      ...drive("vdb", join(vm.dir, "overlay.ext4"), false),
      ...drive("vdc", join(vm.dir, "work.ext4"), false),
      ...drive("vdd", join(vm.dir, "config.ext4"), true),
      "-netdev",
      `user,id=n0,hostfwd=tcp:127.0.0.1:${vm.port}-:22`,
      "-device",
      "virtio-net-device,netdev=n0",
    ],
    { stdout: "ignore", stderr: Bun.file(join(vm.dir, "qemu.stderr")) },
  );
  procs.push(vm.proc);
}

async function ssh(vm: Vm, cmd: string, allowFailure = false) {
  return hostRunner.run(
    [
      "ssh",
      "-i",
      clientKey,
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "BatchMode=yes",
      "-o",
      "StrictHostKeyChecking=yes",
      "-o",
      `UserKnownHostsFile=${join(vm.dir, "known_hosts")}`,
      "-o",
      "ConnectTimeout=5",
      "-o",
      "LogLevel=ERROR",
      "-p",
      String(vm.port),
      "root@127.0.0.1",
      cmd,
    ],
    { allowFailure, timeoutMs: 60_000 },
  );
}

async function waitSsh(vm: Vm, deadlineMs = 180_000): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < deadlineMs) {
    if (vm.proc?.exitCode !== null) throw new Error(`QEMU for ${vm.name} exited: ${await Bun.file(vm.console).text()}`);
    if ((await ssh(vm, "true", true)).code === 0) return performance.now() - t0;
    await Bun.sleep(1000);
  }
  const stderr = await Bun.file(join(vm.dir, "qemu.stderr")).text();
  throw new Error(`SSH to ${vm.name} not ready; qemu stderr: ${stderr}\nconsole:\n${await Bun.file(vm.console).text()}`);
}

async function poweroff(vm: Vm): Promise<void> {
  await ssh(vm, "systemctl poweroff", true);
  const t0 = performance.now();
  const exited = await Promise.race([vm.proc!.exited.then(() => true), Bun.sleep(60_000).then(() => false)]);
  if (!exited) vm.proc!.kill("SIGKILL");
  expect(exited).toBe(true);
  console.log(`${vm.name}: powered off in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

async function startVm(vm: Vm): Promise<void> {
  await buildDrive(vm);
  boot(vm);
  console.log(`${vm.name}: ssh ready after ${((await waitSsh(vm)) / 1000).toFixed(1)} s`);
}

async function checkVm(vm: Vm): Promise<void> {
  const out = (
    await ssh(
      vm,
      [
        "findmnt -n -o FSTYPE /",
        "findmnt -n -o SOURCE /root",
        "hostname",
        "cat /etc/hostname",
        "for l in root overlay work; do readlink -f /dev/disk/by-label/banger-$l; done",
        "stat -c '%a %U %G' /root /root/.ssh /root/.ssh/authorized_keys /root/bin/tool /root/.config/secret /root/synced/sub/run.sh",
        "cat /root/bin/tool /root/.gitconfig",
        "git config --global user.email",
        ". /etc/banger/env; echo $BANGER_VM_NAME",
        "systemctl is-active banger-agent",
        "cat /etc/banger/agent-version",
      ].join("; "),
    )
  ).stdout.split("\n");
  expect(out.slice(0, 7)).toEqual(["overlay", "/dev/vdc", vm.name, vm.name, "/dev/vda", "/dev/vdb", "/dev/vdc"]);
  expect(out.slice(7, 13)).toEqual(["755 root root", "700 root root", "600 root root", "755 root root", "600 root root", "750 root root"]);
  expect(out.slice(13)).toEqual([
    "#!/bin/sh",
    "echo tool",
    "[user]",
    "\tname = Test User",
    "\temail = test@example.com",
    "test@example.com",
    vm.name,
    "active",
    image.agentVersion,
    "",
  ]);
  const sshd = (await ssh(vm, "sshd -T")).stdout;
  expect(sshd).toMatch(/^permitrootlogin (prohibit-password|without-password)$/m);
  for (const line of SSHD_HARDENED) {
    expect(sshd.split("\n")).toContain(line);
  }
  const mounts = (await ssh(vm, "cat /proc/mounts")).stdout;
  expect(mounts).toMatch(/^\/dev\/vdb \/run\/banger\/overlay ext4 rw/m);
  expect(mounts).toMatch(/^overlay \/ overlay rw/m);
  const log = await Bun.file(vm.console).text();
  expect(log).toContain("banger-init: switching to systemd");
  expect(log).not.toContain("banger-init: failed");
}

describe("golden image", () => {
  beforeAll(async () => {
    if (needs.some(([ok]) => !ok)) return;
    clientKey = join(tmp, "id_ed25519");
    await hostRunner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", clientKey]);
    kernel = (await importKernel({ src: join(sharedDir, "kernels/vmlinux-6.1.192.zst"), kernelsDir: join(tmp, "kernels") })).path;
  });

  testNeeds(
    "builds with mmdebstrap and boots two VMs from one read-only base under QEMU (TCG)",
    needs,
    async () => {
      const built = await cachedImage();
      image = built;
      if (built.buildMs) console.log(`image build: ${(built.buildMs / 1000).toFixed(1)} s, rootfs ${(built.sizeBytes / 2 ** 20).toFixed(0)} MiB`);
      expect(image.packages.some((p) => p.startsWith("openssh-server="))).toBe(true);
      expect(image.agentVersion.length).toBeGreaterThan(0);
      // mkfs.ext4 -d keeps owners and modes: setuid sudo, group-owned shadow
      const stat = async (p: string) => (await hostRunner.run(["debugfs", "-R", `stat ${p}`, image.rootfs])).stdout;
      expect(await stat("/usr/bin/sudo")).toMatch(/Mode:\s+04755/);
      expect(await stat("/etc/shadow")).toMatch(/Group:\s+42\s/);
      expect(await stat("/usr/lib/banger/init")).toMatch(/Mode:\s+0755/);
      const baseSha = await sha256(image.rootfs);

      // one VM at a time: two TCG guests plus other load on 2 cores starve the guests' timer calibration
      const [a, b] = [await prepareVm("vm-a"), await prepareVm("vm-b")];
      await startVm(a);
      await checkVm(a);
      await ssh(a, "echo a > /etc/only-a && echo a > /root/work-a && sync");
      await poweroff(a);

      await startVm(b);
      await checkVm(b);
      await ssh(b, "echo b > /etc/only-b && sync");
      expect((await ssh(b, "ls /etc/only-a /root/work-a 2>&1; cat /etc/only-b", true)).stdout).toMatch(/No such file[\s\S]*No such file[\s\S]*\nb\n$/);
      await poweroff(b);

      // stop/start keeps vm-a's overlay and work disk; the config drive is rebuilt
      await startVm(a);
      expect((await ssh(a, "cat /etc/only-a /root/work-a; stat -c '%a' /root/.ssh; ls /etc/only-b 2>&1", true)).stdout).toMatch(/^a\na\n700\n.*No such file/);
      await poweroff(a);
      expect(await sha256(image.rootfs)).toBe(baseSha);
    },
    20 * 60_000,
  );
});
