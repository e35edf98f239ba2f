/**
 * The client mode: every CLI command. `main.ts` loads this lazily once argv names a command;
 * the commands themselves live in `src/cli/`.
 */
export * from "../cli/commands.ts";
