import { BangerError } from "../errors.ts";

/** Awaits a promise that must reject with a BangerError and returns that error for assertions. */
export async function rejection(p: Promise<unknown>): Promise<BangerError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof BangerError) return e;
    throw e;
  }
  throw new Error("expected a BangerError");
}
