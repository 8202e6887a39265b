const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$/;

/** Parses `500ms`, `1s`, `15m`, `2h`, `30d`, `1w` or a bare number of milliseconds. Returns null if invalid. */
export function parseDuration(text: string | number): number | null {
  if (typeof text === 'number') return Number.isFinite(text) && text >= 0 ? text : null;
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  const m = DURATION_RE.exec(t);
  if (!m) return null;
  return Math.round(Number(m[1]) * UNITS[m[2]!]!);
}

/**
 * An expiry given as an ISO date or as a duration from `now`.
 * Returns the ISO timestamp, or null when the text is neither.
 */
export function parseExpiry(text: string, now: Date = new Date()): string | null {
  const ms = parseDuration(text);
  if (ms !== null && !/^\d+$/.test(text.trim())) return new Date(now.getTime() + ms).toISOString();
  if (!/^\d{4}-\d{2}-\d{2}/.test(text.trim())) return null;
  const t = Date.parse(text.trim());
  return Number.isNaN(t) ? null : new Date(t).toISOString();
}

/** Milliseconds as the largest unit that divides them evenly (`15m`, `1s`, `250ms`): how defaults are shown. */
export function formatDuration(ms: number): string {
  for (const unit of ['w', 'd', 'h', 'm', 's'] as const) {
    const size = UNITS[unit]!;
    if (ms !== 0 && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
