/**
 * Names come from users and other administrators: they are shown as text
 * (never markup), inside <bdi> where they appear, and with control and
 * bidirectional-override characters made visible, so a name cannot reorder
 * or hide the text around it.
 */
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

export function inert(text: string | null | undefined): string {
  if (text == null) return '';
  return text.replace(INVISIBLE, (c) => `[U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}]`);
}

export function dateTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '—' : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export function relative(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never';
  const ms = now - Date.parse(iso);
  if (Number.isNaN(ms)) return '—';
  const past = ms >= 0;
  const abs = Math.abs(ms);
  const [n, unit] = abs < 60_000 ? [0, 'now'] : abs < 3_600_000 ? [Math.round(abs / 60_000), 'minute'] : abs < 86_400_000 ? [Math.round(abs / 3_600_000), 'hour'] : [Math.round(abs / 86_400_000), 'day'];
  if (unit === 'now') return 'just now';
  const text = `${n} ${unit}${n === 1 ? '' : 's'}`;
  return past ? `${text} ago` : `in ${text}`;
}

/** What each scope lets a key do, in plain words. */
export const SCOPE_WORDS: Record<string, string> = {
  smtp: 'Send mail (SMTP)',
  imap: 'Read mail (IMAP)',
  pop3: 'Download mail (POP3)',
  'api:read': 'See this account’s keys (API, read)',
  'api:write': 'Create and revoke this account’s keys (API, write)',
  app: 'Everything a mail app needs (mail and API)',
  '*': 'Everything, on every account (administrator)',
  internal: 'Log in as any account (services)',
  metrics: 'Read server metrics (monitoring)',
  introspect: 'Check other keys for a mail server (token introspection)',
};

/** Scopes an account holder picks from. */
export const ACCOUNT_SCOPES = ['smtp', 'imap', 'pop3', 'api:read', 'api:write'];
/** Scopes for access tokens (administrator). */
export const TOKEN_SCOPES = ['*', 'api:read', 'api:write', 'metrics', 'introspect', 'internal', 'smtp', 'imap', 'pop3'];

export function scopeSummary(scopes: string[]): string {
  return scopes.map((s) => SCOPE_WORDS[s]?.replace(/ \(.*\)$/, '') ?? s).join(', ');
}

export const PLATFORMS: { value: string; label: string; apple: boolean }[] = [
  { value: 'ios', label: 'iPhone or iPad', apple: true },
  { value: 'macos', label: 'Mac', apple: true },
  { value: 'android', label: 'Android phone or tablet', apple: false },
  { value: 'windows', label: 'Windows', apple: false },
  { value: 'web', label: 'Other device', apple: false },
];

export function platformLabel(platform: string | undefined | null): string {
  if (!platform) return '—';
  return PLATFORMS.find((p) => p.value === platform)?.label ?? inert(platform);
}

export function protocolLabel(protocol: string | undefined | null): string {
  if (!protocol) return '';
  return protocol === 'http' ? 'API' : protocol.toUpperCase();
}

/** "a, b\nc" → ["a", "b", "c"]. */
export function splitList(text: string): string[] {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}
