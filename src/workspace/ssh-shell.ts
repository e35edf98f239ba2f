import type { Client } from "ssh2";
import { sshExec } from "../host/ssh.ts";
import type { GuestIo, GuestShell } from "./shell.ts";

/** The workspace's GuestShell over an SSH connection. */
export function sshShell(conn: Client): GuestShell {
  return {
    exec: (cmd: string, io: GuestIo = {}) => sshExec(conn, cmd, { stdin: io.stdin, stdout: io.onStdout, stderr: io.onStderr }),
  };
}
