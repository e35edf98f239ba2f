import { expect, test } from "bun:test";
import { sizeUp } from "./exec-client.ts";

async function* chunks(sizes: number[]) {
  let n = 0;
  for (const s of sizes) yield new Uint8Array(s).fill(n++);
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<number[]> {
  const out: number[] = [];
  for await (const c of it) out.push(...c);
  return out;
}

test("small input stays in frames, large input takes the bulk channel; the bytes and their order are kept", async () => {
  const small = await sizeUp(chunks([10, 20]), 100);
  expect(small.bulk).toBe(false);
  expect(await collect(small.stdin)).toEqual([...Array(10).fill(0), ...Array(20).fill(1)]);
  const large = await sizeUp(chunks([60, 60, 5]), 100);
  expect(large.bulk).toBe(true);
  expect(await collect(large.stdin)).toEqual([...Array(60).fill(0), ...Array(60).fill(1), ...Array(5).fill(2)]);
  const empty = await sizeUp(chunks([]), 100);
  expect(empty.bulk).toBe(false);
  expect(await collect(empty.stdin)).toEqual([]);
});
