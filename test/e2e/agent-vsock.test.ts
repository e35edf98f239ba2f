/**
 * The guest agent in a real guest (QEMU microvm, TCG): its vsock listener answers a client
 * inside the guest over vsock loopback (CID 1), and the host's AgentClient gets health and
 * ports over the virtio-serial channel; systemd brings a killed agent back.
 */
import { afterAll, beforeAll, expect } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { unixConnector, waitForAgent } from "../../src/agent/client.ts";
import { guestChecks, makeTestRootfs, rawMicrovmArgv, removeTestRootfs, testKernel } from "../../src/testing/guest-fixtures.ts";
import { projectRoot, testNeeds } from "../../src/testing/skip.ts";
import { buildPortsView } from "../../src/vm/ports-view.ts";

const dir = mkdtempSync(join(tmpdir(), "banger-agent-e2e-"));
const agentBin = join(dir, "banger-agent");
const cleanups: Array<() => void> = [];

const unit = (body: string) => `[Unit]\nDescription=banger agent test\n\n${body}\n`;
const wants = (name: string) => ({ path: `/etc/systemd/system/multi-user.target.wants/${name}`, symlink: `/etc/systemd/system/${name}` });
// Everything for the serial console goes straight to ttyS0 so the host can read it.
// systemd expands `$` in ExecStart, so the shell's own `$` is doubled.
const toConsole = (tag: string, cmd: string) => `/bin/sh -c '${cmd.replaceAll("$", "$$$$")} 2>&1 | sed -u "s/^/${tag}-/" > /dev/ttyS0'`;

function guestFiles() {
  return [
    { path: "/usr/local/bin/banger-agent", fromFile: agentBin, mode: 0o755 },
    {
      path: "/etc/systemd/system/banger-agent.service",
      content: unit("[Service]\nExecStart=/usr/local/bin/banger-agent --auto\nRestart=always\nRestartSec=200ms\n\n[Install]\nWantedBy=multi-user.target"),
    },
    wants("banger-agent.service"),
    {
      path: "/etc/systemd/system/agent-probe.service",
      content: unit(
        `After=banger-agent.service\n\n[Service]\nType=oneshot\nExecStart=${toConsole("VSOCK-PROBE", "for i in $(seq 100); do /usr/local/bin/banger-agent --probe-vsock 1 1024 && break; sleep 0.2; done")}\n\n[Install]\nWantedBy=multi-user.target`,
      ),
    },
    wants("agent-probe.service"),
    {
      path: "/etc/systemd/system/web.service",
      content: unit("[Service]\nWorkingDirectory=/tmp\nExecStart=/usr/bin/python3 -m http.server 8080\n\n[Install]\nWantedBy=multi-user.target"),
    },
    wants("web.service"),
    {
      path: "/etc/systemd/system/agent-killer.service",
      content: unit(
        `After=agent-probe.service\n\n[Service]\nType=oneshot\nExecStart=${toConsole("AGENT", "sleep 30; pgrep -x banger-agent > /run/agent.pid; echo KILLED $(cat /run/agent.pid); pkill -KILL -x banger-agent; sleep 3; echo PID-AFTER $(pgrep -x banger-agent)")}\n\n[Install]\nWantedBy=multi-user.target`,
      ),
    },
    wants("agent-killer.service"),
    { path: "/etc/hostname", content: "t1\n" },
    // getty's vhangup on ttyS0 would cut off the test units' console writes.
    { path: "/etc/systemd/system/serial-getty@ttyS0.service", symlink: "/dev/null" },
  ];
}

/** Boots the image under QEMU microvm with the agent's virtio-serial port on agentSock. */
// tsc_early_khz: under TCG on a busy host the kernel cannot calibrate the TSC and can hang
// with its clock stuck at 0.000000; a preset frequency avoids that (0 of 6 vs 5 of 5 boots).
function bootGuest(kernel: string, image: string, consoleLog: string, agentSock: string) {
  const argv = [
    ...rawMicrovmArgv(kernel, `console=ttyS0 reboot=k panic=1 root=/dev/vda rw tsc_early_khz=2000000 ${process.env.BANGER_TEST_BOOT_ARGS ?? ""}`.trim()),
    "-drive",
    `id=root,file=${image},format=raw,if=none`,
    "-device",
    "virtio-blk-device,drive=root",
    "-device",
    "virtio-serial-device",
    "-chardev",
    `socket,id=ag,path=${agentSock},server=on,wait=off`,
    "-device",
    "virtserialport,chardev=ag,name=org.banger.agent",
    "-serial",
    `file:${consoleLog}`,
  ];
  const proc = Bun.spawn(argv, { stdout: "ignore", stderr: "pipe" });
  cleanups.push(() => proc.kill("SIGKILL"));
  return proc;
}

async function waitForConsole(consoleLog: string, pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const m = existsSync(consoleLog) ? readFileSync(consoleLog, "utf8").match(pattern) : null;
    if (m) return m;
    await Bun.sleep(200);
  }
  throw new Error(`console never matched ${pattern}; tail:\n${readFileSync(consoleLog, "utf8").slice(-3000)}`);
}

beforeAll(async () => {
  if (guestChecks().some(([ok]) => !ok)) return;
  const started = performance.now();
  const build = Bun.spawnSync(
    ["bun", "build", "--compile", "--minify", "--define", `BANGER_AGENT_VERSION="e2e"`, join(projectRoot, "src/guest-agent.ts"), "--outfile", agentBin],
    { stdout: "pipe", stderr: "pipe" },
  );
  if (build.exitCode !== 0) throw new Error(`agent build failed: ${build.stderr.toString()}`);
  console.log(`agent compiled in ${Math.round(performance.now() - started)} ms`);
});

afterAll(() => {
  for (const c of cleanups.reverse()) {
    try {
      c();
    } catch {}
  }
  rmSync(dir, { recursive: true, force: true });
});

testNeeds(
  "agent in a real QEMU guest (needs qemu, root, mmdebstrap): vsock loopback, serial health/ports, systemd restart",
  guestChecks(),
  async () => {
    const kernel = await testKernel();
    const image = await makeTestRootfs({ extraFiles: guestFiles() });
    cleanups.push(() => removeTestRootfs(image));
    const consoleLog = join(dir, "console.log");
    const agentSock = join(dir, "agent.sock");
    const bootStarted = performance.now();
    bootGuest(kernel, image, consoleLog, agentSock);

    // The host side holds one connection open over virtio-serial, as the driver will.
    const ready = await waitForAgent(unixConnector(agentSock), { timeoutMs: 90_000, intervalMs: 250, logPath: consoleLog }).catch((err) => {
      throw new Error(`${err.message}\nconsole tail:\n${readFileSync(consoleLog, "utf8").slice(-3000)}`);
    });
    const client = ready.client;
    cleanups.push(() => client.close());
    console.log(`agent answered over virtio-serial ${Math.round(performance.now() - bootStarted)} ms after QEMU start (${ready.attempts} attempts)`);
    expect(ready.health).toMatchObject({ version: "e2e", hostname: "t1" });
    expect(ready.health.boot_id).toMatch(/^[0-9a-f-]{36}$/);

    const rtt = performance.now();
    for (let i = 0; i < 20; i++) await client.health();
    console.log(`health round trip over virtio-serial under TCG: ${((performance.now() - rtt) / 20).toFixed(1)} ms`);

    // Inside the guest, a vsock client reached the agent's vsock listener (CID 1 loopback).
    const probe = await waitForConsole(consoleLog, /VSOCK-PROBE-(\{.*\})/, 60_000);
    const answer = JSON.parse(probe[1]!);
    expect(answer).toMatchObject({ id: 1, ok: true, result: { version: "e2e", boot_id: ready.health.boot_id } });

    // python3 -m http.server 8080 shows up in ports with its command line.
    let web;
    for (let i = 0; i < 150 && !web; i++) {
      const { sockets } = await client.ports();
      web = sockets.find((s) => s.proto === "tcp" && s.port === 8080);
      if (!web) await Bun.sleep(200);
    }
    expect(web).toMatchObject({ process: "python3", command: "/usr/bin/python3 -m http.server 8080" });
    const view = await buildPortsView((await client.ports()).sockets, {
      vmName: "t1",
      probeHost: "192.0.2.1",
      probe: async (_h, p) => (p === 8080 ? "http" : null),
    });
    expect(view.ports.filter((r) => r.port === 8080).map((r) => r.endpoint)).toEqual(["http://t1.vm:8080"]);

    // The guest kills the agent a while after the vsock probe; systemd's Restart=always
    // brings it back and the same host connection is served by the new process.
    // systemd reports the kill and the restart on the console; the pid line comes after.
    await waitForConsole(consoleLog, /AGENT-PID-AFTER (\d+)/, 90_000);
    expect(readFileSync(consoleLog, "utf8")).toMatch(/Stopped .*banger-agent\.service[\s\S]*Started .*banger-agent\.service/);
    const seenAt = performance.now();
    let again;
    while (!again && performance.now() - seenAt < 30_000) again = await client.health({ timeoutMs: 1000 }).catch(() => undefined);
    console.log(`restarted agent answered ${Math.round(performance.now() - seenAt)} ms after its pid was seen`);
    expect(again?.boot_id).toBe(ready.health.boot_id);
  },
  180_000,
);
