import { expect, test } from "bun:test";
import { BangerError } from "../../errors.ts";
import { FakeHost, model } from "../../testing/fake-host.ts";
import { helperPath, netApplyMain, runNetRequest, sudoersLine, sudoersPath } from "./net-helper.ts";

const deps = { runner: new FakeHost(model({})), sudo: false };
const fail = async (p: Promise<unknown>) =>
  (await p.then(
    () => null,
    (e) => e,
  )) as BangerError;

test("the sudoers line allows exactly the helper with net-apply and this bridge, for one uid", () => {
  expect(sudoersLine(1000, "banger0")).toBe("#1000 ALL=(root) NOPASSWD: /usr/local/libexec/banger/banger0/banger net-apply banger0");
  expect(sudoersPath("banger0")).toBe("/etc/sudoers.d/banger-banger0");
  expect(helperPath("banger0")).toBe("/usr/local/libexec/banger/banger0/banger");
});

test.if(process.getuid?.() === 0)("net-apply refuses what is not one valid request, before touching nft", async () => {
  for (const [stdin, message] of [
    ["not json", "not JSON"],
    ['{"op":"apply","ip":"172.30.0.5","mac":"52:54:00:00:00:01","tap":"bgr0t0","net":"none","extra":1}', "invalid request"],
    ['{"op":"apply","ip":"1.2.3","mac":"52:54:00:00:00:01","tap":"bgr0t0","net":"none"}', "invalid request"],
    ['{"op":"flush"}', "invalid request"],
    ['{"op":"remove","ip":"172.30.0.5","tap":"bgr0t0; rm -rf /"}', "invalid request"],
  ] as const) {
    const err = await fail(netApplyMain(deps, "banger0", stdin, {}));
    expect(err.code).toBe("invalid_argument");
    expect(err.message).toContain(message);
  }
  // A bridge banger did not set up (no mark) is refused, whatever the request.
  const err = await fail(netApplyMain(deps, "nosuchbr0", '{"op":"remove","ip":"172.30.0.5","tap":"bgr0t0"}', {}));
  expect(err.code).toBe("failed_precondition");
  expect(err.message).toContain("not a bridge banger set up");
  expect(deps.runner.calls.filter((c) => c.includes("nft"))).toEqual([]);
});

test("not root: the request goes through sudo -n to the helper, as JSON on stdin; a refusal names the fix", async () => {
  const r = new FakeHost((argv) => (argv[0] === "sudo" ? { code: 1, stderr: "sudo: a password is required\n" } : undefined));
  const err = await fail(runNetRequest({ runner: r, sudo: true }, "banger0", { op: "remove", ip: "172.30.0.5", tap: "bgr0t0" }));
  expect(r.calls[0]).toEqual(["sudo", "-n", "/usr/local/libexec/banger/banger0/banger", "net-apply", "banger0"]);
  expect(JSON.parse(r.stdin[0]!)).toEqual({ op: "remove", ip: "172.30.0.5", tap: "bgr0t0" });
  expect(err.code).toBe("permission_denied");
  expect(err.hint).toContain("sudo banger host setup");
});
