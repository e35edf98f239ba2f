import { describe, expect, test } from "bun:test";
import { detectFirewall, hostSetup, hostStatus, natAdd, natRemove, parseSubnet, systemdUnitText, tapNames } from "../network.ts";
import { FakeHost, cfg, model, nftJson, setUpHost } from "../../testing/fake-host.ts";

describe("NAT per VM", () => {
  test("nftables: an element tagged with tap and ip; repeating is a no-op", async () => {
    const r = new FakeHost(model(setUpHost));
    await natAdd({ runner: r, sudo: false }, cfg, { guestIp: "172.30.0.5", tap: "bgr0t1" });
    expect(r.mutations()).toEqual(['nft add element inet banger_banger0 nat_guests { 172.30.0.5 comment "banger-nat tap=bgr0t1 ip=172.30.0.5" }']);
    const tagged = [{ elem: { val: "172.30.0.5", comment: "banger-nat tap=bgr0t1 ip=172.30.0.5" } }];
    const r2 = new FakeHost(model({ ...setUpHost, nftTable: nftJson(cfg, tagged) }));
    expect(await natAdd({ runner: r2, sudo: false }, cfg, { guestIp: "172.30.0.5", tap: "bgr0t1" })).toEqual([]);
    expect(await natRemove({ runner: r2, sudo: false }, cfg, { guestIp: "172.30.0.5" })).toEqual(["disabled NAT for 172.30.0.5"]);
    expect(r2.mutations()).toEqual(["nft delete element inet banger_banger0 nat_guests { 172.30.0.5 }"]);
  });

  test("removal when the rule or the whole table is gone is a clean no-op", async () => {
    for (const m of [setUpHost, {}]) {
      const r = new FakeHost(model(m));
      expect(await natRemove({ runner: r, sudo: false }, cfg, { guestIp: "172.30.0.5" })).toEqual([]);
      expect(r.mutations()).toEqual([]);
    }
  });

  test("adding without setup says to run host setup", async () => {
    const err = await natAdd({ runner: new FakeHost(model({})), sudo: false }, cfg, { guestIp: "172.30.0.5", tap: "bgr0t1" }).catch((e) => e);
    expect(err.code).toBe("failed_precondition");
    expect(err.hint).toContain("sudo banger host setup");
  });

  test("guest addresses outside the subnet are refused", async () => {
    const err = await natAdd({ runner: new FakeHost(model(setUpHost)), sudo: false }, cfg, { guestIp: "10.0.0.5", tap: "bgr0t1" }).catch((e) => e);
    expect(err.code).toBe("invalid_argument");
  });
});

describe("status, detection, config helpers", () => {
  test("status of a set-up host is ready and lists NAT guests", async () => {
    const tagged = [{ elem: { val: "172.30.0.7", comment: "banger-nat tap=bgr0t0 ip=172.30.0.7" } }];
    const s = await hostStatus({ runner: new FakeHost(model({ ...setUpHost, nftTable: nftJson(cfg, tagged) })), sudo: false }, cfg);
    expect(s.ready).toBe(true);
    expect(s.taps.map((t) => t.name)).toEqual(["bgr0t0", "bgr0t1"]);
    expect(s.nat).toEqual([{ guestIp: "172.30.0.7", tap: "bgr0t0" }]);
  });

  test("status of a bare host names what is missing", async () => {
    const s = await hostStatus({ runner: new FakeHost(model({})), sudo: false }, cfg);
    expect(s).toMatchObject({ ready: false, rulesPresent: false, forwarding: false, tapsMissing: ["bgr0t0", "bgr0t1"] });
    expect(s.bridge.present).toBe(false);
  });

  test("detectFirewall needs nft and says why when it is missing", async () => {
    expect(await detectFirewall({ runner: new FakeHost(model({})), sudo: false })).toBe("nftables");
    const err = await detectFirewall({ runner: new FakeHost(model({ nft: false })), sudo: false }).catch((e) => e);
    expect(err.code).toBe("not_available");
    expect(err.message).toContain("nftables");
    expect(err.hint).toContain("apt-get install nftables");
  });

  test("TAP names and subnets", () => {
    expect(tapNames({ bridge: "banger0", tapCount: 3 })).toEqual(["bgr0t0", "bgr0t1", "bgr0t2"]);
    expect(tapNames({ bridge: "bgt1a2b", tapCount: 1 })).toEqual(["bgrbgt1a2bt0"]);
    expect(parseSubnet("172.30.0.1/24")).toEqual({ gateway: "172.30.0.1", prefix: 24, cidr: "172.30.0.1/24", network: "172.30.0.0/24" });
    expect(() => parseSubnet("172.30.0.0/24")).toThrow(/network/);
    expect(() => parseSubnet("banana")).toThrow(/subnet/);
  });

  test("systemd unit runs setup once at boot, after the distro firewall", () => {
    const text = systemdUnitText({ bridge: "banger0" }, { exec: ["/usr/local/bin/banger", "host", "setup"] });
    expect(text).toContain("ExecStart=/usr/local/bin/banger host setup");
    expect(text).toContain("Type=oneshot");
    expect(text).toMatch(/After=.*nftables\.service/);
    expect(text).toContain("WantedBy=multi-user.target");
  });

  test("systemd unit carries the user's config location and TAP owner to the boot-time run", () => {
    const text = systemdUnitText(
      { bridge: "banger0" },
      { exec: ["/usr/local/bin/banger", "host", "setup", "--owner", "1000:1000"], env: { XDG_CONFIG_HOME: "/home/ada b/.config" } },
    );
    expect(text).toContain('Environment="XDG_CONFIG_HOME=/home/ada b/.config"\nExecStart=/usr/local/bin/banger host setup --owner 1000:1000');
  });

  test("systemd unit is written and enabled once, then left alone", async () => {
    const spec = { path: "/tmp/x/banger-host.service", exec: ["/bin/banger", "host", "setup"] };
    const text = systemdUnitText(cfg, spec);
    const r1 = new FakeHost((a) =>
      a[0] === "cat" ? { code: 1 } : a[0] === "systemctl" && a[1] === "is-enabled" ? { code: 1, stdout: "disabled" } : model(setUpHost)(a),
    );
    expect(await hostSetup({ runner: r1, sudo: false }, { ...cfg, systemdUnit: spec })).toEqual([
      "wrote /tmp/x/banger-host.service",
      "enabled banger-host.service",
    ]);
    expect(r1.stdin[r1.calls.findIndex((c) => c[0] === "tee")]).toBe(text);
    const r2 = new FakeHost((a) => (a[0] === "cat" ? { stdout: text } : a[0] === "systemctl" ? { stdout: "enabled\n" } : model(setUpHost)(a)));
    expect(await hostSetup({ runner: r2, sudo: false }, { ...cfg, systemdUnit: spec })).toEqual([]);
  });
});
