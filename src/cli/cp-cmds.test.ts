import { expect, test } from "bun:test";
import { parseOperand, planCopy, tarMembers } from "./cp-cmds.ts";

test("operands: <vm>:/path is the guest, relative guest paths start at /root, ./a:b is a host path", () => {
  expect(parseOperand("web:/etc/hosts")).toEqual({ vm: "web", path: "/etc/hosts" });
  expect(parseOperand("web:notes")).toEqual({ vm: "web", path: "/root/notes" });
  expect(parseOperand("./a:b")).toEqual({ vm: null, path: "./a:b" });
  expect(parseOperand("/tmp/x")).toEqual({ vm: null, path: "/tmp/x" });
  expect(() => parseOperand("web:")).toThrow("no path after the VM name");
});

test("a copy goes between the host and one VM, either way", () => {
  expect(planCopy(["/a", "/b", "web:/root/"])).toEqual({ direction: "in", vm: "web", sources: ["/a", "/b"], dest: "/root/" });
  expect(planCopy(["web:/var/log", "/tmp/logs"])).toEqual({ direction: "out", vm: "web", sources: ["/var/log"], dest: "/tmp/logs" });
  expect(() => planCopy(["/a"])).toThrow("needs a source and a destination");
  expect(() => planCopy(["/a", "/b"])).toThrow("needs the VM on one side");
  expect(() => planCopy(["web:/a", "db:/b", "/c"])).toThrow("needs the VM on one side");
  expect(() => planCopy(["web:/a", "db:/b"])).toThrow("not between two VMs");
  expect(() => planCopy(["web:/a", "/b", "/c"])).toThrow("needs the VM on one side");
});

test("tar members are each source's name under its own directory", () => {
  expect(tarMembers(["/root/dir/", "/etc/hosts", "/"])).toEqual(["-C", "/root", "dir", "-C", "/etc", "hosts", "-C", "/", "."]);
});
