import type { ImageService } from "../images/image-service.ts";
import type { KernelService } from "../images/kernel-service.ts";
import type { Handlers } from "../rpc/handle.ts";

/** RPC handlers for `kernel` and `image`. */
export function artifactHandlers(kernels: KernelService, images: ImageService): Handlers {
  return {
    "kernel.list": async () => kernels.list(),
    "kernel.show": async (p) => kernels.show(p.name),
    "kernel.import": (p) => kernels.import(p),
    "kernel.pull": (p, ctx) => kernels.pull(p.name, ctx),
    "kernel.build": (p, ctx) => kernels.build(p, ctx),
    "kernel.delete": (p) => kernels.delete(p.name),
    "image.list": async () => images.list(),
    "image.show": async (p) => images.show(p.name),
    "image.pull": (p, ctx) => images.pull(p.name, ctx),
    "image.build": (p, ctx) => images.build(p, ctx),
    "image.import": (p, ctx) => images.import(p, ctx),
    "image.delete": async (p) => images.delete(p.name),
  };
}
