import net from "node:net";
import { BangerError } from "../errors.ts";

/** Splits `HOST:PORT` / `[V6]:PORT`; throws an invalid_argument error naming the config key. */
export function parseHostPort(text: string, defaultPort: number | null, key = "dns_listen"): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:]+)(?::(\d+))?$/.exec(text);
  const port = m?.[2] === undefined ? defaultPort : Number(m[2]);
  if (!m || port === null || !Number.isInteger(port) || port < 0 || port > 65535 || net.isIP(m[1]!) === 0) {
    throw new BangerError("invalid_argument", `invalid address "${text}" for ${key}: expected IP:PORT such as 127.0.0.1:42069`, {
      hint: `Fix ${key} in config.toml`,
    });
  }
  return { host: m[1]!, port };
}
