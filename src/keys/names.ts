/**
 * Text people read: key names, account display names, device ids. Refused:
 * C0 and C1 control characters (U+0085 NEL among them) and DEL, which break
 * lines in logs, tables and profiles; the line and paragraph separators
 * (U+2028, U+2029), for the same reason; and the bidirectional embeddings,
 * overrides and isolates (U+202A–U+202E, U+2066–U+2069), which make a name
 * read as something it is not ("Trojan Source").
 */
const UNSAFE = '\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069';
const UNSAFE_RE = new RegExp(`[${UNSAFE}]`, 'u');

/** The same rule as a JSON-schema pattern, for request bodies. */
export const SAFE_TEXT_PATTERN = `^[^${UNSAFE}]*$`;

export const UNSAFE_TEXT_MESSAGE = 'must not contain control characters, line separators or bidirectional overrides';

/** Longest key name and account display name, in characters. */
export const MAX_KEY_NAME = 100;
export const MAX_DISPLAY_NAME = 200;

/** Why `text` may not be a name, or null when it may. */
export function textProblem(text: string): string | null {
  return UNSAFE_RE.test(text) ? UNSAFE_TEXT_MESSAGE : null;
}

/** Why `name` (already trimmed) may not name a key, or null when it may. */
export function keyNameProblem(name: string): string | null {
  if (name.length < 1 || name.length > MAX_KEY_NAME) return `must be 1-${MAX_KEY_NAME} characters`;
  return textProblem(name);
}
