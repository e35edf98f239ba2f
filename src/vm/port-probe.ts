/**
 * The real web probe for `vm ports`. HTTPS is tried first: many TLS servers answer a
 * cleartext request with an HTTP error, so an HTTP-first probe would mislabel them.
 */
import { connect as netConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { Probe } from "./ports-view.ts";

/** True when a TLS handshake with host:port completes (any certificate: we only classify). */
export function speaksTls(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host, port, rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once("secureConnect", () => done(true));
    socket.once("error", () => done(false));
    socket.once("close", () => done(false));
  });
}

/** True when host:port answers a cleartext HEAD with an HTTP status line. */
export function speaksHttp(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect({ host, port });
    let got = "";
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once("connect", () => socket.write(`HEAD / HTTP/1.0\r\nHost: ${host}:${port}\r\n\r\n`));
    socket.on("data", (d) => {
      got += d.toString("latin1");
      if (got.length >= 5) done(got.startsWith("HTTP/"));
    });
    socket.once("error", () => done(false));
    socket.once("close", () => done(got.startsWith("HTTP/")));
  });
}

/** A Probe that tries HTTPS, then HTTP, each bounded by timeoutMs. */
export function webProbe(timeoutMs = 1500): Probe {
  return async (host, port) => {
    if (await speaksTls(host, port, timeoutMs)) return "https";
    if (await speaksHttp(host, port, timeoutMs)) return "http";
    return null;
  };
}
