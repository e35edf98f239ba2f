import { expect, test } from "bun:test";
import type { GuestShell } from "../workspace/shell.ts";

/**
 * The behaviour every GuestShell must share, run against the local shell and the SSH
 * shell so the fake used by the workspace unit tests cannot drift from the real one.
 */
export function guestShellContract(name: string, shell: () => GuestShell | undefined, wrap = test as (n: string, fn: () => Promise<void>) => void): void {
  wrap(`${name}: exit code, stdout and stderr come back`, async () => {
    expect(await shell()!.exec("printf 'a b'; printf oops >&2; exit 7")).toEqual({ code: 7, stdout: "a b", stderr: "oops" });
  });

  wrap(`${name}: bytes in as Uint8Array and as a stream, in order`, async () => {
    const s = shell()!;
    expect((await s.exec("cat", { stdin: new TextEncoder().encode("whole") })).stdout).toBe("whole");
    async function* parts() {
      for (let i = 0; i < 200; i++) yield new TextEncoder().encode(`${i},`.padEnd(4096, " "));
    }
    const r = await s.exec("tr -d ' ' | tr , '\\n' | tail -1; true", { stdin: parts() });
    expect(r.stdout.trim()).toBe("199");
  });

  wrap(`${name}: streamed stdout is not also collected`, async () => {
    const seen: number[] = [];
    const r = await shell()!.exec("head -c 1048576 /dev/zero; echo done >&2", { onStdout: (c) => void seen.push(c.byteLength) });
    expect({ ...r, bytes: seen.reduce((a, b) => a + b, 0) }).toEqual({ code: 0, stdout: "", stderr: "done\n", bytes: 1 << 20 });
  });

  wrap(`${name}: a command that ignores its stdin still finishes`, async () => {
    async function* endless() {
      for (;;) yield new Uint8Array(65536);
    }
    expect((await shell()!.exec("exit 4", { stdin: endless() })).code).toBe(4);
  });
}
