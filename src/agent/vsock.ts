/**
 * AF_VSOCK for the guest agent through bun:ffi: Bun has no vsock API, but a listening
 * socket made with libc and handed to node:net's `createServer().listen({ fd })` accepts
 * connections (`Bun.listen({ fd })` does not). Also a tiny blocking client used by the
 * agent's hidden probe mode, to test vsock loopback inside a guest.
 */
import { dlopen, FFIType, read } from "bun:ffi";
import { createServer, type Server, type Socket } from "node:net";

const AF_VSOCK = 40;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOCKADDR_VM_SIZE = 16;

/** Any local CID, for binding. */
export const VMADDR_CID_ANY = 0xffffffff;
/** The guest's own CID seen through vsock loopback. */
export const VMADDR_CID_LOCAL = 1;

function libc() {
  const { i32, u32, ptr, i64, u64 } = FFIType;
  return dlopen("libc.so.6", {
    socket: { args: [i32, i32, i32], returns: i32 },
    bind: { args: [i32, ptr, u32], returns: i32 },
    listen: { args: [i32, i32], returns: i32 },
    connect: { args: [i32, ptr, u32], returns: i32 },
    close: { args: [i32], returns: i32 },
    write: { args: [i32, ptr, u64], returns: i64 },
    read: { args: [i32, ptr, u64], returns: i64 },
    strerror: { args: [i32], returns: FFIType.cstring },
    __errno_location: { args: [], returns: ptr },
  }).symbols;
}

type Libc = ReturnType<typeof libc>;

/** struct sockaddr_vm { u16 family; u16 reserved1; u32 port; u32 cid; u8 zero[4]; } */
export function sockaddrVm(cid: number, port: number): Uint8Array {
  const buf = new Uint8Array(SOCKADDR_VM_SIZE);
  const view = new DataView(buf.buffer);
  view.setUint16(0, AF_VSOCK, true);
  view.setUint32(4, port >>> 0, true);
  view.setUint32(8, cid >>> 0, true);
  return buf;
}

function fail(c: Libc, what: string, fd?: number): never {
  const errno = read.i32(c.__errno_location()!, 0);
  if (fd !== undefined && fd >= 0) c.close(fd);
  throw new Error(`vsock ${what} failed: ${String(c.strerror(errno))} (errno ${errno})`);
}

/** Creates a listening AF_VSOCK socket on `port` for any CID and returns its fd. */
export function vsockListenFd(port: number, backlog = 64): number {
  const c = libc();
  const fd = c.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(c, "socket");
  if (c.bind(fd, sockaddrVm(VMADDR_CID_ANY, port), SOCKADDR_VM_SIZE) !== 0) fail(c, `bind to port ${port}`, fd);
  if (c.listen(fd, backlog) !== 0) fail(c, "listen", fd);
  return fd;
}

/** Listens on vsock `port` and hands each connection to `onConnection`. */
export function serveVsock(port: number, onConnection: (conn: Socket) => void): Promise<Server> {
  const fd = vsockListenFd(port);
  const server = createServer(onConnection);
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ fd }, () => {
      server.off("error", reject);
      resolve(server);
    });
  });
}

/**
 * Sends one line to `cid:port` and returns the first line of the answer, blocking. Only for
 * the agent's probe mode: a self-test of vsock from inside the guest.
 */
export function vsockRoundTrip(cid: number, port: number, line: string): string {
  const c = libc();
  const fd = c.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(c, "socket");
  try {
    if (c.connect(fd, sockaddrVm(cid, port), SOCKADDR_VM_SIZE) !== 0) fail(c, `connect to ${cid}:${port}`);
    const out = new TextEncoder().encode(line);
    if (Number(c.write(fd, out, out.length)) !== out.length) fail(c, "write");
    const buf = new Uint8Array(65536);
    let got = "";
    while (!got.includes("\n")) {
      const n = Number(c.read(fd, buf, buf.length));
      if (n < 0) fail(c, "read");
      if (n === 0) break;
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    return got.split("\n")[0] ?? "";
  } finally {
    c.close(fd);
  }
}
