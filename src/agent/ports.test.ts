import { describe, expect, test } from "bun:test";
import { commandLine, formatIPv6, hexToIPv4, hexToIPv6, inodeOwners, joinSockets, parseProcNet, parseSs, parseSsUsers, splitSsAddress } from "./ports.ts";

// Captured from a real kernel: a dual-stack listener on 18080, a v4 + v6-only pair on 18081,
// UDP on 127.0.0.1 and ::1, and a listener whose owner is outside our pid namespace (2024).
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:46A1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20200 1 000000000bdc8547 100 0 0 10 0
   1: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 639 1 0000000016b2e9a8 100 0 0 10 0
   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000016b2e9a8 100 0 0 10 0
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:46A0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20197 1 000000003e1a48e8 100 0 0 10 0
   1: 00000000000000000000000000000000:46A1 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20201 1 00000000539a0e61 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20300 1 00000000539a0e61 100 0 0 10 0
`;
const UDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 9519: 0100007F:3BF9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 20198 2 00000000efa8c7ec 0
 9600: 0501A8C0:A1B2 0101A8C0:0035 01 00000000:00000000 00:00000000 00000000     0        0 20400 2 00000000efa8c7ec 0
`;
const UDP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 9520: 00000000000000000000000001000000:3BFA 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 20199 2 00000000b581c903 0
`;

describe("address formatting", () => {
  test("IPv4 from little-endian hex", () => {
    expect(hexToIPv4("0100007F")).toBe("127.0.0.1");
    expect(hexToIPv4("00000000")).toBe("0.0.0.0");
    expect(hexToIPv4("0501A8C0")).toBe("192.168.1.5");
  });
  test("IPv6 from little-endian words", () => {
    expect(hexToIPv6("00000000000000000000000000000000")).toBe("::");
    expect(hexToIPv6("00000000000000000000000001000000")).toBe("::1");
    expect(hexToIPv6("0000000000000000FFFF00000100007F")).toBe("::ffff:127.0.0.1");
    expect(hexToIPv6("000080FE00000000FF591E02FE4B8D01")).toBe("fe80::21e:59ff:18d:4bfe");
  });
  test("IPv6 compresses only the longest run of two or more zero groups", () => {
    const b = (groups: number[]) => groups.flatMap((g) => [g >> 8, g & 0xff]);
    expect(formatIPv6(b([0x2001, 0xdb8, 0, 0, 1, 0, 0, 0]))).toBe("2001:db8:0:0:1::");
    expect(formatIPv6(b([0x2001, 0xdb8, 0, 1, 1, 1, 1, 1]))).toBe("2001:db8:0:1:1:1:1:1");
  });
});

describe("parseProcNet", () => {
  test("TCP keeps only LISTEN sockets (IPv4)", () => {
    expect(parseProcNet(TCP, "tcp")).toEqual([
      { proto: "tcp", address: "0.0.0.0", port: 18081, inode: 20200 },
      { proto: "tcp", address: "0.0.0.0", port: 2024, inode: 639 },
    ]);
  });
  test("TCP over IPv6: dual-stack wildcard and v4-mapped", () => {
    expect(parseProcNet(TCP6, "tcp")).toEqual([
      { proto: "tcp", address: "::", port: 18080, inode: 20197 },
      { proto: "tcp", address: "::", port: 18081, inode: 20201 },
      { proto: "tcp", address: "::ffff:127.0.0.1", port: 80, inode: 20300 },
    ]);
  });
  test("UDP keeps unconnected sockets, drops connected ones", () => {
    expect(parseProcNet(UDP, "udp")).toEqual([{ proto: "udp", address: "127.0.0.1", port: 15353, inode: 20198 }]);
    expect(parseProcNet(UDP6, "udp")).toEqual([{ proto: "udp", address: "::1", port: 15354, inode: 20199 }]);
  });
  test("empty and truncated tables", () => {
    expect(parseProcNet("", "tcp")).toEqual([]);
    expect(parseProcNet("header\n   0: 00000000:46A1", "tcp")).toEqual([]);
  });
});

describe("process join", () => {
  test("socket links map to the lowest pid; other fds are ignored", () => {
    const owners = inodeOwners([
      { pid: 900, fdLinks: ["socket:[20200]", "pipe:[5]", "/dev/null"] },
      { pid: 400, fdLinks: ["socket:[20200]", "anon_inode:[eventpoll]"] },
      { pid: 401, fdLinks: ["socket:[20197]"] },
    ]);
    expect([...owners.entries()].sort()).toEqual([
      [20197, 401],
      [20200, 400],
    ]);
  });
  test("command lines: NUL-separated args with spaces, trailing NULs dropped", () => {
    expect(commandLine("/tmp/my py\0-c\0print(1)\0--flag\0a b\0")).toBe("/tmp/my py -c print(1) --flag a b");
    expect(commandLine("")).toBe("");
  });
  test("sockets without a known owner carry no pid", () => {
    const sockets = [...parseProcNet(TCP, "tcp"), ...parseProcNet(TCP6, "tcp")];
    const owners = new Map([[20197, 77]]);
    const joined = joinSockets(sockets, owners, (pid) => ({ process: "python3", command: `python3 #${pid}` }));
    expect(joined[0]).toEqual({ proto: "tcp", address: "0.0.0.0", port: 18081 });
    expect(joined[2]).toEqual({ proto: "tcp", address: "::", port: 18080, pid: 77, process: "python3", command: "python3 #77" });
  });
});

// Captured `ss -ltnupH` output, including a process whose name holds a space and is shared
// by a parent and its child, and a listener with no process column.
const SS = `udp UNCONN 0      0      127.0.0.1:15353 0.0.0.0:* users:(("python3",pid=15952,fd=4))
udp UNCONN 0      0          [::1]:15354    [::]:* users:(("python3",pid=15952,fd=5))
udp UNCONN 0      0      127.0.0.53%lo:53   0.0.0.0:* users:(("systemd-resolve",pid=300,fd=13))
tcp LISTEN 0      128      0.0.0.0:18081 0.0.0.0:* users:(("python3",pid=15952,fd=6))
tcp LISTEN 0      128      0.0.0.0:2024  0.0.0.0:*                                   
tcp LISTEN 0      128            *:18080       *:* users:(("python3",pid=15952,fd=3))
tcp LISTEN 0      128         [::]:18081    [::]:* users:(("python3",pid=15952,fd=7))
tcp LISTEN 0      128    127.0.0.1:18090 0.0.0.0:* users:(("my py",pid=16040,fd=3),("my py",pid=16038,fd=3))
tcp LISTEN 0      511   [fe80::1%eth0]:8443 [::]:* users:(("odd \\"(name)\\",x",pid=5,fd=3))
`;

describe("parseSs", () => {
  test("IPv4, IPv6, dual-stack, UDP, names with spaces, no process", () => {
    expect(parseSs(SS)).toEqual([
      { proto: "udp", address: "127.0.0.1", port: 15353, pid: 15952, process: "python3" },
      { proto: "udp", address: "::1", port: 15354, pid: 15952, process: "python3" },
      { proto: "udp", address: "127.0.0.53", port: 53, pid: 300, process: "systemd-resolve" },
      { proto: "tcp", address: "0.0.0.0", port: 18081, pid: 15952, process: "python3" },
      { proto: "tcp", address: "0.0.0.0", port: 2024 },
      { proto: "tcp", address: "*", port: 18080, pid: 15952, process: "python3" },
      { proto: "tcp", address: "::", port: 18081, pid: 15952, process: "python3" },
      { proto: "tcp", address: "127.0.0.1", port: 18090, pid: 16038, process: "my py" },
      { proto: "tcp", address: "fe80::1", port: 8443, pid: 5, process: 'odd \\"(name)\\",x' },
    ]);
  });
  test("garbage and headers are skipped", () => {
    expect(parseSs("Netid State Recv-Q Send-Q Local Peer Process\nnonsense\n\n")).toEqual([]);
  });
  test("address splitting", () => {
    expect(splitSsAddress("[::ffff:10.0.0.1]:80")).toEqual({ address: "::ffff:10.0.0.1", port: 80 });
    expect(splitSsAddress("0.0.0.0%eth0:68")).toEqual({ address: "0.0.0.0", port: 68 });
    expect(splitSsAddress("nonsense")).toBeNull();
  });
  test("users column without a pid", () => {
    expect(parseSsUsers("users:()")).toBeNull();
  });
});
