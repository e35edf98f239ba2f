/**
 * The image's own kernel against the prebuilt test kernel: `vm create` -> ready under QEMU
 * with Debian's cloud kernel (banger's small initrd), the same kernel with initramfs-tools'
 * generic initrd (the one the kernel package made inside the image), and the fixture kernel
 * (everything built in, no initrd). Same image, same run, runs interleaved.
 */
import { join } from "node:path";
import { hostRunner } from "../src/host/runner.ts";
import { goldenImage, realHome, registerGoldenKernel, type RealHome } from "../src/testing/real-env.ts";
import { createVm, deleteVms } from "./fake-home.ts";
import { type BenchCtx, fmtMs, heading, percentile } from "./lib.ts";

/** initramfs-tools' initrd for the image's kernel, copied out of the image's rootfs. */
async function genericInitrd(home: RealHome, release: string): Promise<string> {
  const { dir } = await goldenImage();
  const out = join(home.root, "generic-initrd.img");
  await hostRunner.run(["debugfs", "-R", `dump /boot/initrd.img-${release} ${out}`, join(dir, "rootfs.ext4")]);
  if (!Bun.file(out).size) throw new Error(`the image has no /boot/initrd.img-${release}`);
  return out;
}

/** Create -> ready p50 for each kernel, `runs` interleaved rounds. */
export async function benchKernel(ctx: BenchCtx, runs: number): Promise<void> {
  heading(`image's own kernel under QEMU (${ctx.machine.accel}): vm create -> ready, distro kernel vs the prebuilt test kernel, ${runs} run(s)`, ctx.machine);
  const home = await realHome({ taps: 2 });
  try {
    const release = await registerGoldenKernel(home, "distro");
    await registerGoldenKernel(home, "distro-generic", await genericInitrd(home, release));
    const kernels = { fixture: "default", distro: "distro", generic: "distro-generic" };
    const times: Record<keyof typeof kernels, number[]> = { fixture: [], distro: [], generic: [] };
    for (let i = 0; i < runs; i++) {
      for (const [label, kernel] of Object.entries(kernels) as Array<[keyof typeof kernels, string]>) {
        const name = `k${label.slice(0, 3)}${i}`;
        try {
          times[label].push((await createVm(home, name, ["--kernel", kernel])).ms);
        } finally {
          await deleteVms(home, [name]).catch(() => {});
        }
      }
      console.log(
        `   run ${i + 1}: test kernel ${fmtMs(times.fixture[i]!)}, ${release} + banger initrd ${fmtMs(times.distro[i]!)}, ` +
          `+ initramfs-tools initrd ${fmtMs(times.generic[i]!)}`,
      );
    }
    const p50 = (xs: number[]) => percentile(xs, 50);
    const [fixture, distro, generic] = [p50(times.fixture), p50(times.distro), p50(times.generic)];
    const bench = `kernel (${ctx.machine.accel})`;
    ctx.summary.add({
      bench,
      metric: `create -> ready, ${release} + banger initrd (the one images use), p50 of ${runs}`,
      value: fmtMs(distro),
      baseline: `${fmtMs(fixture)} prebuilt test kernel`,
      ratio: distro / fixture,
    });
    ctx.summary.add({
      bench,
      metric: `create -> ready, ${release} + initramfs-tools initrd, p50 of ${runs}`,
      value: fmtMs(generic),
      baseline: `${fmtMs(distro)} banger initrd`,
      ratio: generic / distro,
    });
  } finally {
    await home.teardownNet();
    await home.cleanup();
  }
}
