import { readlinkSync } from "node:fs";
import type { ProgressEvent } from "../rpc/contract.ts";
import { printable } from "../printable.ts";
import { formatMs } from "../units.ts";

/** Where command output goes; tests pass a recording sink. */
export interface Out {
  out(line: string): void;
  err(line: string): void;
  isTTY: boolean;
  color: boolean;
}

/**
 * The process's stdout/stderr; color only on a TTY without NO_COLOR. Lines go through console's
 * writers: the first touch of process.stdout builds a Node stream, ~20 ms of a command's start-up.
 * console.log prints one string verbatim; console.error paints a terminal red, so stderr on a
 * terminal keeps the stream. Both keep their order with the streams' writes.
 */
export function processOut(): Out {
  const isTTY = isTerminal(1);
  return {
    out: (l) => console.log(l),
    err: isTerminal(2) ? (l) => process.stderr.write(`${l}\n`) : (l) => console.error(l),
    isTTY,
    color: isTTY && !process.env.NO_COLOR,
  };
}

/**
 * Whether fd is a terminal, as isatty says, read from what /proc says the fd is (a terminal
 * device) because loading node:tty costs ~4 ms of every command's start-up.
 */
export function isTerminal(fd: number): boolean {
  try {
    return /^\/dev\/(pts\/\d+|tty\w*|console)$/.test(readlinkSync(`/proc/self/fd/${fd}`));
  } catch {
    return false;
  }
}

/** Aligned columns with a header row. */
export function table(headers: string[], rows: Array<Array<string | number>>): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

export function printJson(out: Out, value: unknown) {
  out.out(JSON.stringify(value, null, 2));
}

const SPIN = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** Renders live progress: a spinner on a TTY, plain lines when piped, JSON lines with --json. */
export function progressRenderer(out: Out, json: boolean) {
  let timer: ReturnType<typeof setInterval> | null = null;
  let current: { stage: string; started: number } | null = null;
  let frame = 0;
  const clear = () => {
    if (timer) clearInterval(timer);
    timer = null;
    if (out.isTTY) process.stderr.write("\r\x1b[2K");
  };
  return {
    onEvent(event: ProgressEvent) {
      if (json) return out.out(JSON.stringify({ event }));
      if (event.status === "start") {
        current = { stage: event.stage, started: Date.now() };
        if (out.isTTY) {
          clear();
          timer = setInterval(() => {
            const el = formatMs(Date.now() - current!.started);
            process.stderr.write(`\r\x1b[2K${SPIN[frame++ % SPIN.length]} ${current!.stage} ${el}`);
          }, 80);
        }
        return;
      }
      clear();
      const el = event.elapsedMs === undefined ? "" : ` ${formatMs(event.elapsedMs)}`;
      const mark = event.status === "done" ? "✓" : event.status === "failed" ? "✗" : "·";
      out.err(`${mark} ${event.stage}${el}${event.message ? `: ${printable(event.message)}` : ""}`);
    },
    stop: clear,
  };
}
