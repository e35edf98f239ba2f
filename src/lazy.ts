/** A module's functions, loaded on the first call: a CLI command pays only for the code it runs. */
export type Lazy<M> = {
  [K in keyof M]: M[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : never;
};

export function lazy<M extends object>(load: () => Promise<M>): Lazy<M> {
  let loading: Promise<M> | undefined;
  const call =
    (key: string) =>
    async (...args: unknown[]) => {
      const mod = (await (loading ??= load())) as Record<string, (...a: unknown[]) => unknown>;
      return mod[key]!(...args);
    };
  return new Proxy({}, { get: (_, key) => call(String(key)) }) as Lazy<M>;
}
