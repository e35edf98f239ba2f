/** The exec socket's one JSON message: the OPEN frame a CLI sends to start `vm exec` (the rest are binary frames). */
import * as v from "valibot";

/** What the CLI's OPEN frame carries: the VM and the command. */
export const ExecOpenSchema = v.strictObject({
  vm: v.pipe(v.string(), v.minLength(1)),
  argv: v.pipe(v.array(v.string()), v.minLength(1, "a command is needed after --")),
  env: v.optional(v.record(v.pipe(v.string(), v.regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "environment names are letters, digits and _")), v.string())),
  cwd: v.optional(v.pipe(v.string(), v.startsWith("/", "--cwd must be an absolute path"))),
  user: v.optional(v.pipe(v.string(), v.regex(/^[a-z_][a-z0-9_-]*\$?$/i, "--user must be a user name"))),
  tty: v.optional(v.boolean()),
  rows: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
  cols: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
  /** Move stdin and stdout over a TCP connection to the guest when it has one (vm cp, workspace uploads). */
  bulk: v.optional(v.boolean()),
});

export type ExecOpenRequest = v.InferOutput<typeof ExecOpenSchema>;
