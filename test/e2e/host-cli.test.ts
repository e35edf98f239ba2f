// `banger host setup` through the CLI as root: who the TAPs belong to (--owner, or the user
// who ran sudo) and a teardown that leaves nothing. A private bridge and subnet of its own.
import { afterAll, expect } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { bangerBin, TestHome } from "../../src/testing/cli.ts";
import { privateNet } from "../../src/testing/fake-env.ts";
import { hasBin, isRoot, testNeeds } from "../../src/testing/skip.ts";

const needs: Array<[boolean, string]> = [
  [isRoot, "needs root"],
  [hasBin("ip"), "needs ip (iproute2)"],
  [hasBin("nft") || hasBin("iptables"), "needs nftables or iptables"],
  [existsSync(bangerBin), "dist/banger not built (bun run build)"],
];
const { bridge, subnet } = privateNet();
const home = new TestHome();
writeFileSync(home.paths.configFile, `dns_listen = "127.0.0.1:0"\nbridge = "${bridge}"\nsubnet = "${subnet}"\ntap_pool = 2\n`);

afterAll(async () => {
  if (isRoot) await home.run(["host", "teardown"]);
  await home.cleanup();
});

/** uid owning each TAP of the pool, read from sysfs. */
async function tapOwners(): Promise<number[]> {
  const r = await home.run(["host", "status", "--json"]);
  const taps = (JSON.parse(r.stdout) as { taps: Array<{ name: string }> }).taps;
  return taps.map((t) => Number(readFileSync(`/sys/class/net/${t.name}/owner`, "utf8")));
}

testNeeds("host setup --owner gives the TAPs to that uid; under sudo they go to the sudo user; teardown leaves nothing", needs, async () => {
  const setup = await home.run(["host", "setup", "--owner", "65534:65534"]);
  expect(setup.code).toBe(0);
  expect(await tapOwners()).toEqual([65534, 65534]);
  // As `sudo banger host setup` run by uid 65533 with this HOME kept: its TAPs are re-made for it.
  const viaSudo = await home.run(["host", "setup"], { env: { SUDO_USER: "nobody", SUDO_UID: "65533", SUDO_GID: "65533" } });
  expect(viaSudo.code).toBe(0);
  expect(await tapOwners()).toEqual([65533, 65533]);
  const bad = await home.run(["host", "setup", "--owner", "nobody"]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toContain("expected UID:GID");
  expect((await home.run(["host", "teardown"])).code).toBe(0);
  const links = Bun.spawnSync(["ip", "-o", "link", "show"]).stdout.toString();
  expect(links).not.toContain(bridge);
});
