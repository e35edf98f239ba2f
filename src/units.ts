/** Parses "500ms", "10s", "2m", "1h" (or a bare number of seconds) to milliseconds; null when malformed. */
export function parseDuration(s: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (!m) return null;
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "s"] ?? 1000;
  return Math.round(n * unit);
}

/** Parses "8G", "512M", "1T", "4096" (bytes) or "8GiB" to bytes; null when malformed. */
export function parseSize(s: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT])?(i?B)?$/i.exec(s.trim());
  if (!m) return null;
  const pow = { K: 1, M: 2, G: 3, T: 4 }[(m[2] ?? "").toUpperCase() as "K"] ?? 0;
  return Math.round(Number(m[1]) * 1024 ** pow);
}

/** Formats bytes compactly: 8589934592 → "8G". */
export function formatSize(bytes: number): string {
  const units = ["B", "K", "M", "G", "T"];
  let i = 0;
  let n = bytes;
  while (n >= 1024 && i < units.length - 1 && (n / 1024) % 1 === 0) {
    n /= 1024;
    i++;
  }
  if (n >= 1024 && i < units.length - 1) {
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return `${n.toFixed(1)}${units[i]}`;
  }
  return `${n}${units[i]}`;
}

/** Formats milliseconds as "1.2s" / "340ms". */
export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)}s` : `${Math.round(ms)}ms`;
}
