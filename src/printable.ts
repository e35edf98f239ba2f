/**
 * Guest-supplied text made safe for a terminal: escape sequences (colours, OSC 52 clipboard
 * writes, title changes) and other control characters are removed before banger prints
 * anything a guest or an image wrote. `--json` output keeps exact strings (JSON escapes them).
 */

// OSC (ESC ] … BEL or ESC \), DCS/SOS/PM/APC strings, CSI (ESC [ … final) and two-byte escapes,
// in 7-bit and C1 forms: removed whole, so no half-sequence is left to show as junk.
const SEQUENCES = /(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?|\x1b[ -/]*[0-~]?/g;
const CONTROLS_KEEP_LINES = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;
const CONTROLS = /[\x00-\x1f\x7f-\x9f]/g;

/** Removes escape sequences and control characters; `lines` keeps newlines and tabs (logs), else they become spaces. */
export function printable(text: string, opts: { lines?: boolean } = {}): string {
  const noSeq = text.replace(SEQUENCES, "");
  if (opts.lines) return noSeq.replace(/\r\n/g, "\n").replace(CONTROLS_KEEP_LINES, "");
  return noSeq.replace(/[\n\t]/g, " ").replace(CONTROLS, "");
}
