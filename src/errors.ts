/** The closed set of error codes that cross the RPC socket and decide the exit code. */
export const ERROR_CODES = [
  "invalid_argument",
  "not_found",
  "already_exists",
  "failed_precondition",
  "permission_denied",
  "unavailable",
  "not_available",
  "cancelled",
  "timeout",
  "internal",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** The one error type: a code from the closed set, a message, and a hint saying what to do. */
export class BangerError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  readonly details?: unknown;

  constructor(code: ErrorCode, message: string, opts: { hint?: string; cause?: unknown; details?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "BangerError";
    this.code = code;
    this.hint = opts.hint;
    this.details = opts.details;
  }

  toJSON(): WireError {
    return { code: this.code, message: this.message, hint: this.hint, details: this.details };
  }
}

/** The shape of an error on the wire. */
export interface WireError {
  code: ErrorCode;
  message: string;
  hint?: string;
  details?: unknown;
}

/** Turns anything thrown into a BangerError; unknown throws become `internal`. */
export function toBangerError(err: unknown): BangerError {
  if (err instanceof BangerError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new BangerError("internal", message, { cause: err, hint: "See the daemon log: banger daemon logs" });
}

/** Exit codes: 0 ok, 1 failed, 2 usage. */
export function exitCodeFor(code: ErrorCode): number {
  return code === "invalid_argument" ? 2 : 1;
}

export function isErrorCode(x: unknown): x is ErrorCode {
  return typeof x === "string" && (ERROR_CODES as readonly string[]).includes(x);
}
