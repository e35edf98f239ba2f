import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RecordingRunner } from "../testing/recording-runner.ts";
import { BANGER_KERNEL_FRAGMENT, BASE_KERNEL_CONFIG, buildKernel, findKernelSource, fragmentOptions, missingOptions } from "./kernel-config.ts";

const dir = mkdtempSync(join(tmpdir(), "banger-kbuild-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("kernel config", () => {
  test("the shipped full config already has every option of banger's fragment", () => {
    expect(fragmentOptions().length).toBeGreaterThan(20);
    expect(missingOptions(BASE_KERNEL_CONFIG)).toEqual([]);
    for (const k of [
      "CONFIG_ACPI_BUTTON",
      "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
      "CONFIG_SERIO_I8042",
      "CONFIG_KEYBOARD_ATKBD",
      "CONFIG_OVERLAY_FS",
      "CONFIG_VIRTIO_VSOCKETS",
    ]) {
      expect(BANGER_KERNEL_FRAGMENT).toContain(`${k}=y`);
    }
  });

  test("missingOptions names options olddefconfig dropped", () => {
    expect(missingOptions("CONFIG_A=y\n# CONFIG_B is not set\n", "CONFIG_A=y\nCONFIG_B=y\n")).toEqual(["CONFIG_B"]);
  });

  test("findKernelSource picks the newest tarball or says what to install", async () => {
    const usr = join(dir, "usr-src");
    mkdirSync(usr);
    await expect(findKernelSource(usr)).rejects.toMatchObject({ code: "not_available" });
    for (const n of ["linux-source-5.10.tar.xz", "linux-source-6.1.tar.xz", "linux-headers-6.1"]) writeFileSync(join(usr, n), "");
    expect(await findKernelSource(usr)).toBe(join(usr, "linux-source-6.1.tar.xz"));
  });
});

describe("buildKernel plan", () => {
  test("extracts, writes base+fragment config, olddefconfig, make vmlinux", async () => {
    const usr = join(dir, "src2");
    mkdirSync(usr);
    writeFileSync(join(usr, "linux-source-6.1.tar.xz"), "");
    const work = join(dir, "work");
    const tree = join(work, "linux-source-6.1");
    const runner = new RecordingRunner((argv) => {
      if (argv[0] === "tar") mkdirSync(tree, { recursive: true }); // what extraction leaves
      return undefined;
    });
    const stages: string[] = [];
    const r = await buildKernel({ workDir: work, usrSrc: usr, onStage: (s) => stages.push(s) }, { runner, cpus: 2 });
    expect(runner.calls).toEqual([
      ["tar", "-C", work, "-xf", join(usr, "linux-source-6.1.tar.xz")],
      ["make", "-C", tree, "olddefconfig"],
      ["make", "-C", tree, "-j2", "vmlinux"],
    ]);
    expect(stages).toEqual(["extract", "configure", "compile"]);
    expect(r.vmlinux).toBe(join(tree, "vmlinux"));
    const config = await Bun.file(join(tree, ".config")).text();
    expect(config.startsWith(BASE_KERNEL_CONFIG)).toBe(true);
    expect(config.endsWith(BANGER_KERNEL_FRAGMENT)).toBe(true);
  });

  test("a config that lost banger's options after olddefconfig is refused before compiling", async () => {
    const usr = join(dir, "src3");
    mkdirSync(usr);
    writeFileSync(join(usr, "linux-source-6.1.tar.xz"), "");
    const tree = join(dir, "work3", "linux-source-6.1");
    const runner = new RecordingRunner((argv) => {
      if (argv[0] === "tar") mkdirSync(tree, { recursive: true });
      if (argv[3] === "olddefconfig") writeFileSync(join(tree, ".config"), "CONFIG_EXT4_FS=y\n");
      return undefined;
    });
    await expect(buildKernel({ workDir: join(dir, "work3"), usrSrc: usr }, { runner, cpus: 2 })).rejects.toThrow(/CONFIG_ACPI_BUTTON/);
    expect(runner.calls.some((c) => c.includes("vmlinux"))).toBe(false);
  });
});
