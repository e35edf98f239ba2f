/**
 * The newcomer's kernel: from a state directory with no kernel registered, `image build`
 * installs Debian's cloud kernel in the image and registers it (vmlinux + banger's initrd), and
 * `vm create` boots it under QEMU. One image build and one guest serve every check.
 */
import { afterAll, beforeAll, describe, expect } from "bun:test";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestHome } from "../../src/testing/cli.ts";
import { privateNet } from "../../src/testing/fake-env.ts";
import { realGuestChecks } from "../../src/testing/real-env.ts";
import { testNeeds } from "../../src/testing/skip.ts";

// the fixture kernel is not needed: this test boots the image's own kernel
const needs = realGuestChecks().filter(([, why]) => !why.includes("fixture kernel"));
const T = 600_000;
let h: TestHome;
let built: { name: string; kernel: string; kernel_version: string; packages: number } | null = null;
let buildOut = "";
let netUp = false;

beforeAll(async () => {
  if (needs.some(([ok]) => !ok)) return;
  h = new TestHome();
  const { bridge, subnet } = privateNet();
  const port = 20000 + Math.floor(Math.random() * 20000);
  mkdirSync(h.paths.configDir, { recursive: true });
  writeFileSync(
    h.paths.configFile,
    `vmm = "qemu"\nbridge = "${bridge}"\nsubnet = "${subnet}"\ntap_pool = 2\ndns_listen = "127.0.0.1:${port}"\nstop_grace = "30s"\n`,
  );
  const setup = await h.run(["host", "setup"]);
  if (setup.code !== 0) throw new Error(`host setup failed: ${setup.stderr}`);
  netUp = true;
  const t0 = performance.now();
  const r = await h.run(["image", "build", "--name", "deb", "--packages", "nftables", "--json"]);
  buildOut = r.stdout + r.stderr;
  console.log(`image build with the distro kernel: ${((performance.now() - t0) / 1000).toFixed(1)} s, exit ${r.code}`);
  if (r.code === 0) built = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
}, T);

afterAll(async () => {
  if (!h) return;
  await h.run(["vm", "delete", "--force", "dk"]);
  if (netUp) await h.run(["host", "teardown"]);
  await h.cleanup();
});

const ssh = async (script: string) => {
  const r = await h.run(["vm", "ssh", "dk", "--", "sh", "-c", script]);
  return { ...r, out: r.stdout.trim() };
};

describe("an image's own kernel (real guest under QEMU)", () => {
  testNeeds(
    "image build on a state directory with no kernel registers the image's kernel and pairs it",
    needs,
    async () => {
      if (!built) console.log(buildOut.slice(-3000));
      expect(built).not.toBeNull();
      expect(built!.kernel).toBe("deb-kernel");
      expect(built!.kernel_version).toMatch(/^\d+\.\d+\.\d+-\d+-cloud-amd64$/);
      const k = JSON.parse((await h.run(["kernel", "show", "deb-kernel", "--json"])).stdout);
      expect(k.version).toBe(built!.kernel_version);
      expect(k.source).toBe("image:deb");
      expect(existsSync(k.path) && existsSync(k.initrd_path)).toBe(true);
      expect(readdirSync(h.paths.kernelsDir)).toEqual([]);
      const del = await h.run(["kernel", "delete", "deb-kernel"]);
      expect(del.code).not.toBe(0);
      expect(del.stderr).toContain("banger image delete deb");
    },
    T,
  );

  testNeeds(
    "vm create boots it to ready; uname -r is the package's release; overlay root and work disk are there",
    needs,
    async () => {
      const t0 = performance.now();
      const r = await h.run(["vm", "create", "--name", "dk", "--image", "deb"]);
      if (r.code !== 0) console.log(r.stderr.slice(-3000));
      expect(r.code).toBe(0);
      console.log(
        `distro kernel create: ${((performance.now() - t0) / 1000).toFixed(1)} s; ${r.stderr
          .split("\n")
          .filter((l) => l.startsWith("✓"))
          .join(" | ")}`,
      );
      const uname = await ssh("uname -r");
      expect(uname.out).toBe(built!.kernel_version);
      expect((await ssh(`dpkg-query -W -f='\${Status}' linux-image-$(uname -r)`)).out).toBe("install ok installed");
      expect((await ssh("findmnt -n -o FSTYPE /")).out).toBe("overlay");
      expect((await ssh("findmnt -n -o SOURCE /root")).out).toBe("/dev/vdc");
      expect((await ssh("ip -4 -o addr show dev eth0")).out).toContain("inet ");
    },
    T,
  );

  testNeeds(
    "modules load in the guest: wireguard, br_netfilter; nft (from --packages) lists the ruleset",
    needs,
    async () => {
      const mods = await ssh(
        "modprobe wireguard && modprobe br_netfilter && grep -E '^(wireguard|br_netfilter) ' /proc/modules | cut -d' ' -f1 | sort | tr '\\n' ' '",
      );
      expect(mods.code).toBe(0);
      expect(mods.out).toBe("br_netfilter wireguard");
      expect((await ssh("dpkg-query -W -f='${Status}' nftables")).out).toBe("install ok installed");
      const nft = await ssh("nft list ruleset && echo nft-ok");
      expect(nft.code).toBe(0);
      expect(nft.out).toContain("nft-ok");
    },
    T,
  );

  testNeeds(
    "a graceful stop works (the ACPI power button module is in the initrd)",
    needs,
    async () => {
      const stop = await h.run(["vm", "stop", "dk"]);
      expect(stop.code).toBe(0);
      expect(stop.stdout).toContain("dk: stopped (graceful)");
    },
    T,
  );
});
