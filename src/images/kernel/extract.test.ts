import { describe, expect, test } from "bun:test";
import { BangerError } from "../../errors.ts";
import { hasBin, testNeeds } from "../../testing/skip.ts";
import { readKernelVersion } from "../kernels.ts";
import { writeCpio } from "./cpio.ts";
import { bzImagePayload, extractVmlinux, isBzImage } from "./extract.ts";
import { moduleLoadOrder, parseModulesDep } from "./initrd.ts";
import { lz4LegacyDecompress } from "./lz4.ts";

const enc = new TextEncoder();
/** A stand-in vmlinux: ELF magic and a version banner. */
const ELF = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, ...enc.encode("\x02\x01 padding Linux version 6.1.0-99-test (x@y) #1 SMP\0 and more bytes".repeat(50))]);

/** A bzImage-shaped file: one setup sector, the boot protocol 2.15 header, the payload after the setup code. */
function fakeBzImage(compressed: Uint8Array, size = ELF.length): Uint8Array {
  const payload = new Uint8Array([...compressed, ...new Uint8Array(new Uint32Array([size]).buffer)]);
  const setup = 2 * 512;
  const prefix = 100;
  const out = new Uint8Array(setup + prefix + payload.length + 64);
  const view = new DataView(out.buffer);
  out[0x1f1] = 1;
  out.set(enc.encode("HdrS"), 0x202);
  view.setUint16(0x206, 0x20f, true);
  view.setUint32(0x248, prefix, true);
  view.setUint32(0x24c, payload.length, true);
  out.set(payload, setup + prefix);
  return out;
}

describe("extract-vmlinux", () => {
  test("an LZ4 legacy block with literals and an overlapping match decodes", () => {
    const block = new Uint8Array([0x35, ...enc.encode("abc"), 3, 0, 0x20, ...enc.encode("!?")]);
    const stream = new Uint8Array([0x02, 0x21, 0x4c, 0x18, block.length, 0, 0, 0, ...block, 0xff, 0xff, 0xff, 0x7f]);
    expect(new TextDecoder().decode(lz4LegacyDecompress(stream))).toBe("abcabcabcabc!?");
  });

  test("gzip and zstd payloads give back the ELF; an ELF passes through", () => {
    expect(extractVmlinux(fakeBzImage(Bun.gzipSync(ELF)), "k")).toEqual(ELF);
    expect(extractVmlinux(fakeBzImage(Bun.zstdCompressSync(ELF)), "k")).toEqual(ELF);
    expect(extractVmlinux(ELF, "k")).toBe(ELF);
    expect(readKernelVersion(extractVmlinux(fakeBzImage(Bun.gzipSync(ELF)), "k"))).toBe("6.1.0-99-test");
  });

  testNeeds("an LZ4 payload made by the lz4 tool (the kernel build's `lz4 -l`) gives back the ELF", [[hasBin("lz4"), "lz4 not installed"]], async () => {
    const p = Bun.spawn(["lz4", "-l", "-9", "-c"], { stdin: ELF, stdout: "pipe" });
    const compressed = new Uint8Array(await new Response(p.stdout).arrayBuffer());
    const bz = fakeBzImage(compressed);
    expect(isBzImage(bz)).toBe(true);
    expect(bzImagePayload(bz).length).toBe(compressed.length + 4);
    expect(extractVmlinux(bz, "k")).toEqual(ELF);
  });

  test("what is not a kernel is refused with the file named and a hint", () => {
    const err = (() => {
      try {
        extractVmlinux(enc.encode("just text".repeat(100)), "/boot/x");
      } catch (e) {
        return e as BangerError;
      }
    })();
    expect(err?.code).toBe("invalid_argument");
    expect(err?.message).toContain("/boot/x");
    expect(err?.hint).toContain("kernel import");
    expect(() => extractVmlinux(fakeBzImage(enc.encode("BZh91AY&SY rest")), "k")).toThrow(/not recognised|not supported/);
  });
});

describe("banger's initrd", () => {
  const dep = [
    "kernel/drivers/virtio/virtio_ring.ko:",
    "kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
  ].join("\n");

  test("modules load after their dependencies, once each; built-in ones are skipped, missing ones refused", () => {
    const order = moduleLoadOrder(["virtio_blk", "vmw_vsock_virtio_transport", "ext4"], parseModulesDep(dep), new Set(["ext4"]));
    expect(order.map((p) => p.split("/").pop())).toEqual([
      "virtio_ring.ko",
      "virtio.ko",
      "virtio_blk.ko",
      "vsock.ko",
      "vmw_vsock_virtio_transport_common.ko",
      "vmw_vsock_virtio_transport.ko",
    ]);
    expect(() => moduleLoadOrder(["overlay"], parseModulesDep(dep), new Set())).toThrow(/no module overlay/);
  });

  test("the cpio archive is newc with a trailer, names and data padded to 4 bytes", () => {
    const a = writeCpio([
      { path: "bin", type: "dir" },
      { path: "/init", type: "file", data: "#!/bin/sh\n", mode: 0o755 },
      { path: "bin/sh", type: "symlink", target: "busybox" },
    ]);
    const text = new TextDecoder("latin1").decode(a);
    expect(text.startsWith("070701")).toBe(true);
    expect(a.length % 4).toBe(0);
    expect(text).toContain("init\0");
    expect(text).toContain("#!/bin/sh\n");
    expect(text).toContain("TRAILER!!!\0");
    // the file's header: mode 100755, size 10
    const at = text.indexOf("init\0") - 110;
    expect(text.slice(at + 14, at + 22)).toBe((0o100755).toString(16).padStart(8, "0"));
    expect(text.slice(at + 54, at + 62)).toBe("0000000a");
  });
});
