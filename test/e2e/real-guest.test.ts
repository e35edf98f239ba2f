import { afterAll, beforeAll, describe, expect } from "bun:test";
import { openStore, openStoreReadOnly } from "../../src/store/db.ts";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fakeUpstream } from "../../src/testing/dns-client.ts";
import { SSHD_HARDENED } from "../../src/testing/guest-fixtures.ts";
import { goldenImage, realGuestChecks, realHome, type RealHome } from "../../src/testing/real-env.ts";
import { testNeeds } from "../../src/testing/skip.ts";
import { isAlive } from "../../src/vm/drivers/process.ts";

const needs = realGuestChecks();
let h: RealHome;
let baseSha = "";
const T = 300_000;
/** The guest resolver's upstream: a fake on the host's loopback that answers everything and counts. */
let upstream: Awaited<ReturnType<typeof fakeUpstream>> | undefined;

beforeAll(async () => {
  if (needs.some(([ok]) => !ok)) return;
  upstream = await fakeUpstream({ address: "198.18.7.7" });
  h = await realHome({
    config: `dns_upstream = ["127.0.0.1:${upstream.port}"]\n[[file_sync]]\nhost = "~/sync/token"\nguest = "~/.config/tool/token"\n\n[[file_sync]]\nhost = "~/sync/tree"\nguest = "/root/tree"\n\n[[file_sync]]\nhost = "~/sync/script.sh"\nguest = "~/bin/script.sh"\nmode = "0755"\n\n[[file_sync]]\nhost = "~/sync/missing"\nguest = "~/missing"\n`,
  });
  const sync = join(h.env.HOME!, "sync");
  mkdirSync(join(sync, "tree", "sub"), { recursive: true });
  writeFileSync(join(sync, "token"), "secret-token\n");
  writeFileSync(join(sync, "tree", "a.txt"), "a\n", { mode: 0o640 });
  writeFileSync(join(sync, "tree", "sub", "b.sh"), "#!/bin/sh\n", { mode: 0o755 });
  writeFileSync(join(sync, "script.sh"), "#!/bin/sh\necho hi\n");
  writeFileSync(join(h.env.HOME!, ".gitconfig"), "[user]\n\tname = Guest Tester\n\temail = tester@example.com\n");
  baseSha = await sha256(join(h.paths.imagesDir, "bookworm", "rootfs.ext4"));
}, 900_000);

afterAll(async () => {
  upstream?.close();
  if (!h) return;
  await h.run(["vm", "delete", "--force", "t1", "t2"]);
  await h.teardownNet();
  await h.cleanup();
});

async function sha256(path: string): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  for await (const chunk of Bun.file(path).stream() as unknown as AsyncIterable<Uint8Array>) hasher.update(chunk);
  return hasher.digest("hex");
}

const ssh = async (vm: string, script: string) => {
  const r = await h.run(["vm", "ssh", vm, "--", "sh", "-c", script]);
  return { ...r, out: r.stdout.trim() };
};

describe("real guests under QEMU (needs qemu, mmdebstrap, root)", () => {
  testNeeds(
    "vm create shows wait agent, wait ssh, ready; file_sync warns about the missing path and the VM starts",
    needs,
    async () => {
      const r = await h.run(["vm", "create", "--name", "t1"]);
      expect(r.code).toBe(0);
      const stages = r.stderr
        .split("\n")
        .filter((l) => l.startsWith("✓"))
        .map((l) => l.slice(2).replace(/ [\d.]+m?s$/, ""));
      expect(stages).toEqual(["resolve image", "allocate", "rootfs", "work disk", "network", "boot", "wait agent", "wait ssh", "ready"]);
      expect(r.stderr).toMatch(/file_sync\[3\]: .*missing does not exist; skipped/);
      console.log(
        `real guest create: ${r.stderr
          .split("\n")
          .filter((l) => l.startsWith("✓"))
          .join(" | ")}`,
      );
    },
    T,
  );

  testNeeds(
    "vm ssh runs a command with its exit code and the guest kernel is the fixture's",
    needs,
    async () => {
      const uname = await h.run(["vm", "ssh", "t1", "--", "uname", "-a"]);
      expect(uname.code).toBe(0);
      expect(uname.stdout).toContain("6.1.192");
      expect((await ssh("t1", "exit 7")).code).toBe(7);
    },
    T,
  );

  testNeeds(
    "provisioning: /root and .ssh modes, hostname, git identity, file_sync owners and modes, sshd drop-in",
    needs,
    async () => {
      const r = await ssh(
        "t1",
        "stat -c '%n %a %U' /root /root/.ssh /root/.ssh/authorized_keys /root/.config/tool/token /root/tree/a.txt /root/tree/sub/b.sh /root/bin/script.sh; hostname; git config --global user.email; cat /root/.config/tool/token",
      );
      expect(r.out.split("\n")).toEqual([
        "/root 755 root",
        "/root/.ssh 700 root",
        "/root/.ssh/authorized_keys 600 root",
        "/root/.config/tool/token 600 root",
        "/root/tree/a.txt 640 root",
        "/root/tree/sub/b.sh 755 root",
        "/root/bin/script.sh 755 root",
        "t1",
        "tester@example.com",
        "secret-token",
      ]);
      const sshd = (await ssh("t1", "sshd -T")).out;
      for (const line of ["permitrootlogin without-password", ...SSHD_HARDENED]) {
        expect(sshd).toContain(line);
      }
    },
    T,
  );

  testNeeds(
    "vm ports lists sshd and an HTTP server as a URL, and a TLS server as https, without duplicates",
    needs,
    async () => {
      await ssh(
        "t1",
        "cd /tmp && openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out c.pem -days 1 -subj /CN=t1.vm 2>/dev/null; (setsid python3 -m http.server 8080 >/dev/null 2>&1 < /dev/null &); (setsid openssl s_server -quiet -accept 8443 -cert c.pem -key k.pem -www >/dev/null 2>&1 < /dev/null &); for i in $(seq 60); do ss -ltn | grep -q ':8080 ' && ss -ltn | grep -q ':8443 ' && exit 0; sleep 0.5; done; exit 1",
      );
      const table = await h.run(["vm", "ports", "t1"]);
      expect(table.code).toBe(0);
      const lines = table.stdout.trim().split("\n");
      expect(lines[0]).toMatch(/^PROTO\s+ENDPOINT\s+PROCESS\s+COMMAND$/);
      expect(lines.filter((l) => /t1\.vm:22\s/.test(l))).toHaveLength(1);
      expect(table.stdout).toMatch(/tcp\s+http:\/\/t1\.vm:8080\s+python3\s+python3 -m http.server 8080/);
      expect(table.stdout).toMatch(/tcp\s+https:\/\/t1\.vm:8443\s+openssl/);
      const json = JSON.parse((await h.run(["vm", "ports", "t1", "--json"])).stdout);
      expect(json.ports.filter((p: { port: number }) => p.port === 22)).toHaveLength(1);
    },
    T,
  );

  testNeeds(
    "vm health answers, and a killed agent comes back",
    needs,
    async () => {
      const before = JSON.parse((await h.run(["vm", "health", "t1", "--json"])).stdout);
      expect(before.boot_id).toMatch(/^[0-9a-f-]{36}$/);
      await ssh("t1", "pkill -9 -f banger-agent; sleep 3");
      let ok = false;
      for (let i = 0; i < 20 && !ok; i++) {
        const r = await h.run(["vm", "health", "t1", "--json"]);
        ok = r.code === 0 && JSON.parse(r.stdout).boot_id === before.boot_id;
        if (!ok) await Bun.sleep(1000);
      }
      expect(ok).toBe(true);
    },
    T,
  );

  testNeeds(
    "the guest resolver follows the VM's policy: none refuses and asks no upstream, allow forwards only listed names, nat forwards; vm set --net applies at once",
    needs,
    async () => {
      // One raw A query from the guest to its resolver (the gateway), printing the rcode and answer count.
      const py = `import socket,struct,sys
q=struct.pack(">HHHHHH",7,0x100,1,0,0,0)+b"".join(bytes([len(p)])+p.encode() for p in sys.argv[1].split("."))+b"\\0"+struct.pack(">HH",1,1)
ns=[l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(5);s.sendto(q,(ns,53));r=s.recv(512)
print(r[3]&15,struct.unpack(">H",r[6:8])[0])`;
      expect((await ssh("t1", `cat > /tmp/q.py <<'EOF'\n${py}\nEOF`)).code).toBe(0);
      const ask = async (name: string) => (await ssh("t1", `python3 /tmp/q.py ${name}`)).out;
      const setNet = async (policy: string) => expect((await h.run(["vm", "set", "t1", "--net", policy])).code).toBe(0);
      upstream!.seen.length = 0;
      expect(await ask("exfil.example.test")).toBe("5 0"); // REFUSED
      expect(await ask("t1.vm")).toBe("0 1");
      expect(upstream!.seen).toEqual([]);
      await setNet("allow:svc.test");
      expect(await ask("svc.test")).toBe("0 1");
      expect(await ask("other.test")).toBe("5 0");
      expect(upstream!.seen).toEqual(["svc.test"]);
      await setNet("nat");
      expect(await ask("other.test")).toBe("0 1");
      await setNet("none");
      expect(await ask("other.test")).toBe("5 0");
      expect(upstream!.seen).toEqual(["svc.test", "other.test"]);
    },
    T,
  );

  testNeeds(
    "rootfs copy-on-write: two VMs write /etc files and see only their own; the base is unchanged; a guest resolves its own .vm name and a group peer's, not a VM outside its group",
    needs,
    async () => {
      const r = await h.run(["vm", "create", "--name", "t2", "--nat"]);
      expect(r.code).toBe(0);
      expect((await ssh("t1", "echo one > /etc/only-t1")).code).toBe(0);
      expect((await ssh("t2", "echo two > /etc/only-t2")).code).toBe(0);
      expect((await ssh("t1", "ls /etc/only-*")).out).toBe("/etc/only-t1");
      expect((await ssh("t2", "ls /etc/only-*")).out).toBe("/etc/only-t2");
      const t2 = JSON.parse((await h.run(["vm", "show", "t2", "--json"])).stdout);
      expect((await ssh("t2", "getent hosts t2.vm")).out).toMatch(new RegExp(`^${t2.ip.replaceAll(".", "\\.")}\\s+t2\\.vm`));
      // t1 and t2 share no group: t1's name does not resolve from t2 (NXDOMAIN); in one group it does.
      const other = await ssh("t2", "getent hosts t1.vm");
      expect(other.code).not.toBe(0);
      expect(other.out).toBe("");
      for (const vm of ["t1", "t2"]) expect((await h.run(["vm", "set", vm, "--group", "pair"])).code).toBe(0);
      const t1 = JSON.parse((await h.run(["vm", "show", "t1", "--json"])).stdout);
      expect((await ssh("t2", "getent hosts t1.vm")).out).toMatch(new RegExp(`^${t1.ip.replaceAll(".", "\\.")}\\s+t1\\.vm`));
      for (const vm of ["t1", "t2"]) expect((await h.run(["vm", "set", vm, "--group", ""])).code).toBe(0);
      const resolv = (await ssh("t2", "cat /etc/resolv.conf")).out;
      expect(resolv).not.toMatch(/nameserver 127\./);
      expect(resolv).toContain(`nameserver ${h.subnet.split("/")[0]}`);
      expect(await sha256(join(h.paths.imagesDir, "bookworm", "rootfs.ext4"))).toBe(baseSha);
    },
    T,
  );

  testNeeds(
    "with --nat a guest reaches a server outside the bridge (a namespace of the test's own); without it, it cannot",
    needs,
    async () => {
      const id = Math.random().toString(36).slice(2, 6);
      const ns = `bgo${id}`;
      const [hostIf, nsIf] = [`bgo${id}h`, `bgo${id}n`];
      const net = `198.18.${Math.floor(Math.random() * 200) + 10}`;
      const sh = (cmd: string) => Bun.spawnSync(["sh", "-c", cmd]);
      sh(
        `ip netns add ${ns} && ip link add ${hostIf} type veth peer name ${nsIf} && ip link set ${nsIf} netns ${ns} && ip addr add ${net}.1/24 dev ${hostIf} && ip link set ${hostIf} up && ip netns exec ${ns} sh -c 'ip addr add ${net}.2/24 dev ${nsIf} && ip link set ${nsIf} up && ip link set lo up && ip route add default via ${net}.1'`,
      );
      const server = Bun.spawn(["ip", "netns", "exec", ns, "python3", "-m", "http.server", "8000", "--bind", `${net}.2`], {
        stdout: "ignore",
        stderr: "ignore",
      });
      try {
        // python3 may start slowly (a version-manager shim); wait until the host itself gets an answer.
        for (let i = 0; i < 100; i++) {
          const ok = await fetch(`http://${net}.2:8000/`, { signal: AbortSignal.timeout(1000) })
            .then((r) => r.ok)
            .catch(() => false);
          if (ok) break;
          await Bun.sleep(200);
        }
        const fetchFrom = (vm: string) => ssh(vm, `curl -s -m 5 -o /dev/null -w '%{http_code}' http://${net}.2:8000/`);
        expect((await fetchFrom("t2")).out).toBe("200");
        expect((await fetchFrom("t1")).out).not.toBe("200");
        expect((await h.run(["vm", "set", "t1", "--nat"])).code).toBe(0);
        expect((await fetchFrom("t1")).out).toBe("200");
        expect((await h.run(["vm", "set", "t1", "--no-nat"])).code).toBe(0);
        expect((await fetchFrom("t1")).out).not.toBe("200");
      } finally {
        server.kill();
        await server.exited;
        sh(`ip link del ${hostIf}; ip netns del ${ns}`);
      }
    },
    T,
  );

  testNeeds(
    "an image whose agent is older than banger's gets the current agent at the next start",
    needs,
    async () => {
      const current = JSON.parse((await h.run(["vm", "health", "t1", "--json"])).stdout).version;
      const db = openStore(h.paths.dbFile);
      db.run("UPDATE images SET agent_version = 'old-agent' WHERE name = 'bookworm'");
      db.close();
      // Make the guest's own agent really old: a stub that cannot answer, and an old version stamp.
      expect(
        (
          await ssh(
            "t1",
            "echo old-agent > /etc/banger/agent-version && cp /bin/sleep /usr/local/bin/banger-agent.new && mv /usr/local/bin/banger-agent.new /usr/local/bin/banger-agent",
          )
        ).code,
      ).toBe(0);
      expect((await h.run(["vm", "stop", "t1"])).code).toBe(0);
      const start = await h.run(["vm", "start", "t1"]);
      expect(start.code).toBe(0);
      expect(JSON.parse((await h.run(["vm", "health", "t1", "--json"])).stdout).version).toBe(current);
      expect((await ssh("t1", "cat /etc/banger/agent-version")).out).toBe(current);
      expect((await h.run(["vm", "logs", "t1"])).stdout).toContain(`guest agent updated to ${current}`);
    },
    T,
  );

  testNeeds(
    "files under /root and /etc survive vm stop + vm start",
    needs,
    async () => {
      expect((await ssh("t1", "echo kept > /root/kept.txt")).code).toBe(0);
      const stop = await h.run(["vm", "stop", "t1"]);
      expect(stop.stdout).toContain("t1: stopped (graceful)");
      expect((await h.run(["vm", "start", "t1"])).code).toBe(0);
      expect((await ssh("t1", "cat /root/kept.txt /etc/only-t1")).out).toBe("kept\none");
    },
    T,
  );

  testNeeds(
    "ssh t1.vm works after ssh-config install with host-key checking on",
    needs,
    async () => {
      expect((await h.run(["ssh-config", "install"])).code).toBe(0);
      expect((await h.run(["ssh-config", "install"])).stdout).toContain("already installed");
      const cfg = join(h.env.HOME!, ".ssh", "config");
      const r = Bun.spawnSync(["ssh", "-F", cfg, "-o", "BatchMode=yes", "t1.vm", "hostname"], { env: { ...process.env, ...h.env } });
      expect(r.stdout.toString().trim()).toBe("t1");
      expect(r.exitCode).toBe(0);
      const show = (await h.run(["ssh-config", "show"])).stdout;
      expect(show).toContain("StrictHostKeyChecking yes");
      expect(show).not.toContain("StrictHostKeyChecking no");
      expect((await h.run(["ssh-config", "uninstall"])).code).toBe(0);
    },
    T,
  );

  testNeeds(
    "vm delete leaves nothing: processes, files under the state dir, rows",
    needs,
    async () => {
      const vms = JSON.parse((await h.run(["vm", "list", "--json"])).stdout) as Array<{ pid: number; dir: string }>;
      const r = await h.run(["vm", "delete", "--force", "t1", "t2"]);
      expect(r.code).toBe(0);
      for (const vm of vms) {
        expect(isAlive(vm.pid)).toBe(false);
        expect(existsSync(vm.dir)).toBe(false);
      }
      expect(readdirSync(h.paths.vmsDir)).toEqual([]);
      const db = openStoreReadOnly(h.paths.dbFile)!;
      expect(db.query("SELECT count(*) AS n FROM vms").get()).toEqual({ n: 0 });
      db.close();
      const status = JSON.parse((await h.run(["host", "status", "--json"])).stdout);
      expect(status.nat).toEqual([]);
    },
    T,
  );
});

void goldenImage;
