declare const BANGER_VERSION: string | undefined;
declare const BANGER_BUILD_ID: string | undefined;

/** The release version (injected by build.ts). */
export const VERSION: string = typeof BANGER_VERSION === "string" ? BANGER_VERSION : "0.1.0-dev";

/**
 * The build id: a hash of the sources, injected by build.ts. The daemon and CLI compare
 * it to decide whether a running daemon is from another build. BANGER_BUILD_ID_OVERRIDE
 * exists so tests can start a daemon that claims to be another build.
 */
export const BUILD_ID: string = process.env.BANGER_BUILD_ID_OVERRIDE || (typeof BANGER_BUILD_ID === "string" ? BANGER_BUILD_ID : "dev");

declare const BANGER_AGENT_VERSION: string | undefined;
/** The guest agent version this build ships; guests with another one get this agent at next start. */
export const AGENT_VERSION: string = typeof BANGER_AGENT_VERSION === "string" ? BANGER_AGENT_VERSION : "dev";
