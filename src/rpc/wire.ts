/**
 * The wire's constants, apart from the method schemas in contract.ts: the client's fast path
 * (`vm list`, `vm show`) needs these without paying for building every schema.
 */

/** Header carrying a build id: the caller's on a request, the daemon's on every answer (the version handshake). */
export const BUILD_HEADER = "x-banger-build";
