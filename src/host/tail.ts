import { closeSync, existsSync, fstatSync, openSync, readSync } from "node:fs";
import { printable } from "../printable.ts";

/** Most bytes `tailLines` reads, however many lines are asked for: logs are read from their end, never whole. */
export const MAX_TAIL_BYTES = 4 * 1024 * 1024;
const CHUNK = 64 * 1024;

/**
 * The last `lines` lines of a file, read backwards from its end in chunks and never more
 * than `maxBytes`; a missing file is empty. A line cut by the byte limit is dropped whole.
 */
export function tailLines(path: string, lines: number, maxBytes = MAX_TAIL_BYTES): string {
  if (!existsSync(path) || lines <= 0) return "";
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const chunks: Buffer[] = [];
    let start = size;
    let newlines = 0;
    while (start > 0 && size - start < maxBytes && newlines <= lines) {
      const len = Math.min(CHUNK, start, maxBytes - (size - start));
      start -= len;
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, start);
      chunks.unshift(buf);
      for (const b of buf) if (b === 10) newlines++;
    }
    const text = Buffer.concat(chunks).toString("utf8");
    const all = text.split("\n");
    // The first piece is partial unless the read reached the start of the file.
    const whole = start === 0 ? all : all.slice(1);
    const trailing = whole[whole.length - 1] === "" ? 1 : 0;
    return whole.slice(-lines - trailing).join("\n");
  } finally {
    closeSync(fd);
  }
}

/** A VMM log's last three lines on one line, made safe to print, for error messages; "(no output)" when there are none. */
export function logTail(path: string): string {
  try {
    return (
      printable(tailLines(path, 3, 64 * 1024), { lines: true })
        .trim()
        .split("\n")
        .join(" | ") || "(no output)"
    );
  } catch {
    return "(no output)";
  }
}

/** Counts the lines of a tail's text (a final newline ends the last line, it does not start one). */
function lineCount(text: string): number {
  if (text === "") return 0;
  return text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
}

/** Like tailLines, but when the log was just rotated and holds fewer lines, the rest come from the end of `<path>.1`. */
export function tailRotated(path: string, lines: number, maxBytes = MAX_TAIL_BYTES): string {
  const now = tailLines(path, lines, maxBytes);
  const have = lineCount(now);
  if (have >= lines || !existsSync(`${path}.1`)) return now;
  const before = tailLines(`${path}.1`, lines - have, maxBytes);
  return before && !before.endsWith("\n") ? `${before}\n${now}` : before + now;
}
