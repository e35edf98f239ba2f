import { describe, expect, test } from "bun:test";
import { BangerError } from "../errors.ts";
import { checkGroup, formatNetPolicy, parseNetPolicy, policyAllowsName, policyCidrs, policyFromRow, resolvedAddrsToAllow } from "./net-policy.ts";

function invalid(text: string): BangerError {
  try {
    parseNetPolicy(text);
  } catch (err) {
    expect(err).toBeInstanceOf(BangerError);
    expect((err as BangerError).code).toBe("invalid_argument");
    expect((err as BangerError).hint).toContain("--net");
    return err as BangerError;
  }
  throw new Error(`"${text}" was accepted`);
}

describe("parseNetPolicy", () => {
  test("none and nat", () => {
    expect(parseNetPolicy("none")).toEqual({ mode: "none" });
    expect(parseNetPolicy(" nat ")).toEqual({ mode: "nat" });
  });

  test("allow rules: domains, wildcards, CIDRs with and without ports, canonical text", () => {
    const p = parseNetPolicy("allow:API.Example.com.,*.example.org,203.0.113.9/24,198.51.100.7:443,198.51.100.7");
    expect(p).toEqual({
      mode: "allow",
      rules: [
        { kind: "domain", name: "api.example.com" },
        { kind: "wildcard", suffix: "example.org" },
        { kind: "cidr", cidr: "203.0.113.0/24" },
        { kind: "cidr", cidr: "198.51.100.7/32", port: 443 },
        { kind: "cidr", cidr: "198.51.100.7/32" },
      ],
    });
    expect(formatNetPolicy(p)).toBe("allow:api.example.com,*.example.org,203.0.113.0/24,198.51.100.7/32:443,198.51.100.7/32");
    expect(parseNetPolicy(formatNetPolicy(p))).toEqual(p);
  });

  test("duplicates collapse", () => {
    expect(formatNetPolicy(parseNetPolicy("allow:a.test,A.test,a.test."))).toBe("allow:a.test");
  });

  test.each([
    ["open", "invalid network policy"],
    ["allow:", "empty rule"],
    ["allow:a.test,,b.test", "empty rule"],
    ["allow:localhost", 'invalid domain "localhost"'],
    ["allow:bad_name.test", 'invalid domain "bad_name.test"'],
    ["allow:*.", "invalid domain"],
    ["allow:a.*.test", "invalid domain"],
    ["allow:300.1.1.1/8", 'invalid address "300.1.1.1/8"'],
    ["allow:10.0.0.0/33", "invalid prefix length /33"],
    ["allow:10.0.0.1:0", "invalid port 0"],
    ["allow:10.0.0.1:70000", "invalid port 70000"],
  ])("%p is refused naming the part", (text, message) => {
    expect(invalid(text).message).toContain(message);
  });
});

describe("policyAllowsName", () => {
  const allow = parseNetPolicy("allow:svc.test,*.example.org,10.0.0.0/8");
  test("exact domains and wildcard subdomains only", () => {
    expect(policyAllowsName(allow, "svc.test")).toBe(true);
    expect(policyAllowsName(allow, "SVC.test.")).toBe(true);
    expect(policyAllowsName(allow, "x.svc.test")).toBe(false);
    expect(policyAllowsName(allow, "other.test")).toBe(false);
    expect(policyAllowsName(allow, "a.b.example.org")).toBe(true);
    expect(policyAllowsName(allow, "example.org")).toBe(false);
    expect(policyAllowsName(allow, "badexample.org")).toBe(false);
  });
  test("none allows nothing, nat everything", () => {
    expect(policyAllowsName({ mode: "none" }, "svc.test")).toBe(false);
    expect(policyAllowsName({ mode: "nat" }, "anything.test")).toBe(true);
  });
  test("CIDR rules are listed for the firewall", () => {
    expect(policyCidrs(allow)).toEqual([{ cidr: "10.0.0.0/8", port: undefined }]);
    expect(policyCidrs({ mode: "nat" })).toEqual([]);
  });
});

test("resolved addresses: private, link-local, reserved, IPv6 and host addresses never enter the set", () => {
  const addrs = [
    "198.18.0.5",
    "10.1.2.3",
    "172.20.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "127.0.0.1",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "2001:db8::1",
    "203.0.113.4",
    "203.0.113.4",
    "93.184.216.34",
  ];
  expect(resolvedAddrsToAllow(addrs, ["93.184.216.34"])).toEqual(["198.18.0.5", "203.0.113.4"]);
});

test("rows without a policy keep their nat flag; a corrupt one falls back to none", () => {
  expect(policyFromRow({ nat: true })).toEqual({ mode: "nat" });
  expect(policyFromRow({ net: null, nat: false })).toEqual({ mode: "none" });
  expect(policyFromRow({ net: "allow:a.test", nat: false })).toEqual({ mode: "allow", rules: [{ kind: "domain", name: "a.test" }] });
  expect(policyFromRow({ net: "garbage", nat: true })).toEqual({ mode: "none" });
});

test("group names", () => {
  expect(checkGroup("web-1")).toBe("web-1");
  expect(checkGroup("")).toBe("");
  expect(() => checkGroup("Web")).toThrow(/invalid group "Web"/);
  expect(() => checkGroup("a b")).toThrow(BangerError);
});
