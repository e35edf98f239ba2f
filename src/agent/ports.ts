/**
 * Pure parsers for listening sockets: `ss -ltnupH` output, and the kernel's own tables in
 * /proc/net/{tcp,tcp6,udp,udp6} joined with /proc/<pid>/fd socket links. The agent reads
 * /proc directly so it works in images without iproute2; the ss parser serves hosts and
 * images where ss is the only source.
 */
import type { ListeningSocket } from "./protocol.ts";

/** A socket from /proc/net before it is joined with its owning process. */
export interface ProcNetSocket {
  proto: "tcp" | "udp";
  address: string;
  port: number;
  inode: number;
}

/** What the agent knows about one process. */
export interface ProcessInfo {
  process?: string;
  command?: string;
}

const TCP_LISTEN = "0A";
const UDP_UNCONNECTED = "07";

/** Formats 8 hex digits of /proc/net/tcp (a little-endian u32) as dotted IPv4. */
export function hexToIPv4(hex: string): string {
  const b = [6, 4, 2, 0].map((i) => Number.parseInt(hex.slice(i, i + 2), 16));
  return b.join(".");
}

/** Formats 32 hex digits of /proc/net/tcp6 (four little-endian u32 words) as IPv6 text. */
export function hexToIPv6(hex: string): string {
  const bytes: number[] = [];
  for (let w = 0; w < 4; w++) {
    const word = hex.slice(w * 8, w * 8 + 8);
    for (const i of [6, 4, 2, 0]) bytes.push(Number.parseInt(word.slice(i, i + 2), 16));
  }
  return formatIPv6(bytes);
}

/** RFC 5952 text for 16 bytes: longest zero run compressed, v4-mapped shown dotted. */
export function formatIPv6(bytes: number[]): string {
  const isMapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  if (isMapped) return `::ffff:${bytes.slice(12).join(".")}`;
  const groups = Array.from({ length: 8 }, (_, i) => (bytes[i * 2]! << 8) | bytes[i * 2 + 1]!);
  let best = { at: -1, len: 0 };
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > best.len && j - i > 1) best = { at: i, len: j - i };
    i = j;
  }
  const hexs = groups.map((g) => g.toString(16));
  if (best.at < 0) return hexs.join(":");
  return `${hexs.slice(0, best.at).join(":")}::${hexs.slice(best.at + best.len).join(":")}`;
}

/**
 * Parses one /proc/net/{tcp,tcp6,udp,udp6} table into listening sockets: TCP in LISTEN,
 * UDP unconnected (what `ss -lu` calls UNCONN, remote port 0).
 */
export function parseProcNet(text: string, proto: "tcp" | "udp"): ProcNetSocket[] {
  const out: ProcNetSocket[] = [];
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const [local, remote, st, inodeText] = [f[1]!, f[2]!, f[3]!, f[9]!];
    const listening = proto === "tcp" ? st === TCP_LISTEN : st === UDP_UNCONNECTED && remote.endsWith(":0000");
    if (!listening) continue;
    const [addrHex, portHex] = local.split(":");
    if (!addrHex || !portHex) continue;
    const address = addrHex.length === 32 ? hexToIPv6(addrHex) : hexToIPv4(addrHex);
    out.push({ proto, address, port: Number.parseInt(portHex, 16), inode: Number(inodeText) });
  }
  return out;
}

/** The inode in a /proc/<pid>/fd link such as `socket:[12345]`, or null for other fds. */
export function socketInode(link: string): number | null {
  const m = /^socket:\[(\d+)\]$/.exec(link);
  return m ? Number(m[1]) : null;
}

/**
 * Maps socket inodes to the pid holding them. A socket shared by a forked family
 * (a server and its workers) goes to the lowest pid, usually the parent.
 */
export function inodeOwners(processes: Array<{ pid: number; fdLinks: string[] }>): Map<number, number> {
  const owners = new Map<number, number>();
  for (const { pid, fdLinks } of processes) {
    for (const link of fdLinks) {
      const inode = socketInode(link);
      if (inode === null) continue;
      const had = owners.get(inode);
      if (had === undefined || pid < had) owners.set(inode, pid);
    }
  }
  return owners;
}

/** Turns /proc/<pid>/cmdline (NUL-separated) into one line of text. */
export function commandLine(raw: string): string {
  return raw.replace(/\0+$/, "").split("\0").join(" ").trim();
}

/** Joins /proc/net sockets with their owners; sockets whose owner is unknown keep no pid. */
export function joinSockets(sockets: ProcNetSocket[], owners: Map<number, number>, info: (pid: number) => ProcessInfo): ListeningSocket[] {
  return sockets.map(({ proto, address, port, inode }) => {
    const pid = owners.get(inode);
    if (pid === undefined) return { proto, address, port };
    return { proto, address, port, pid, ...info(pid) };
  });
}

/** Splits `ss` address text (`0.0.0.0:22`, `[::]:22`, `*:22`, `127.0.0.53%lo:53`) into parts. */
export function splitSsAddress(text: string): { address: string; port: number } | null {
  const colon = text.lastIndexOf(":");
  if (colon <= 0) return null;
  const port = Number(text.slice(colon + 1));
  if (!Number.isInteger(port)) return null;
  let address = text.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  address = address.replace(/%[^%]*$/, "");
  return { address, port };
}

/** Parses the `users:((…))` column of ss: the lowest pid with its process name. */
export function parseSsUsers(text: string): { pid: number; process: string } | null {
  let best: { pid: number; process: string } | null = null;
  // Names are quoted verbatim by ss, so a name may hold spaces, commas or parentheses.
  for (const m of text.matchAll(/\("((?:[^"]|"(?!,pid=))*)",pid=(\d+),fd=\d+\)/g)) {
    const pid = Number(m[2]);
    if (!best || pid < best.pid) best = { pid, process: m[1]! };
  }
  return best;
}

/** Parses `ss -ltnupH` output (no header) into listening sockets; `ss` gives no command line. */
export function parseSs(output: string): ListeningSocket[] {
  const out: ListeningSocket[] = [];
  for (const line of output.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 6) continue;
    const proto = f[0];
    if (proto !== "tcp" && proto !== "udp") continue;
    const local = splitSsAddress(f[4]!);
    if (!local) continue;
    const address = local.address === "*" ? "*" : local.address;
    const usersAt = line.indexOf("users:(");
    const users = usersAt >= 0 ? parseSsUsers(line.slice(usersAt)) : null;
    out.push(users ? { proto, address, port: local.port, ...users } : { proto, address, port: local.port });
  }
  return out;
}
