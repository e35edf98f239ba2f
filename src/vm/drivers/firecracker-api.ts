import { BangerError } from "../../errors.ts";

/** A Firecracker API answer: status and parsed JSON body (null for 204). */
export interface FcResponse {
  status: number;
  body: any;
}

/** A 4xx/5xx from Firecracker, carrying its fault_message. */
export class FirecrackerApiError extends BangerError {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly faultMessage: string,
  ) {
    super("failed_precondition", `Firecracker refused ${method} ${path} (${status}): ${faultMessage}`, {
      hint: "See the VM's VMM log (banger vm logs) for Firecracker's side of the story.",
    });
  }
}

/** The seam the driver talks to Firecracker through; tests may pass a recording fake. */
export interface FirecrackerApi {
  request(method: "GET" | "PUT" | "PATCH", path: string, body?: unknown): Promise<FcResponse>;
}

/**
 * HTTP/1.1 over the API Unix socket, each request bounded (2 s; firecracker-go-sdk uses 500 ms).
 * Connections are kept alive (Firecracker's API server keeps them open): a boot's dozen requests
 * then share one instead of each paying for a connect and an accept, five times faster.
 */
export class UnixSocketApi implements FirecrackerApi {
  constructor(
    readonly socketPath: string,
    // Firecracker answers in well under a millisecond; the bound is for a host so loaded that a
    // VMM is not scheduled for a while: 20 fake VMMs booting at once on 2 busy cores missed 500 ms.
    private readonly timeoutMs = 2000,
  ) {}

  /** Sends one request; throws FirecrackerApiError on a non-2xx answer, BangerError(unavailable) on transport failure. */
  async request(method: "GET" | "PUT" | "PATCH", path: string, body?: unknown): Promise<FcResponse> {
    let res: Response;
    try {
      res = await fetch(`http://localhost${path}`, {
        unix: this.socketPath,
        method,
        headers: body === undefined ? { Accept: "application/json" } : { "Content-Type": "application/json", Accept: "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
        keepalive: true,
      } as RequestInit & { unix: string });
    } catch (err) {
      throw new BangerError("unavailable", `Firecracker API at ${this.socketPath} did not answer ${method} ${path}: ${(err as Error).message}`, {
        cause: err,
        hint: "The VMM may have exited; check the VM's console and VMM logs.",
      });
    }
    const text = await res.text();
    let parsed: any = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = text;
    }
    if (res.status >= 300) {
      const fault = parsed?.fault_message ?? parsed?.error ?? text;
      throw new FirecrackerApiError(method, path, res.status, String(fault));
    }
    return { status: res.status, body: parsed };
  }
}
