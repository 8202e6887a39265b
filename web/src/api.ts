/**
 * The console talks to the REST API with its session cookie. Every
 * state-changing request carries the session's CSRF token. Errors become an
 * ApiError whose messages are plain words, by form field where the API names
 * one; the raw JSON is never shown.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Field name (as the form calls it) → what is wrong with it. */
    readonly fields: Record<string, string> = {},
  ) {
    super(message);
  }
}

let csrfToken = '';
let onSessionLost: (() => void) | null = null;

export function setCsrfToken(token: string): void {
  csrfToken = token;
}

/** Called when a request finds the session gone (expired, signed out elsewhere). */
export function setSessionLostHandler(fn: () => void): void {
  onSessionLost = fn;
}

const STATUS_WORDS: Record<number, string> = {
  401: 'Your session has ended; please sign in again.',
  403: 'You may not do that.',
  404: 'That no longer exists; it may have been removed meanwhile.',
  409: 'That conflicts with what is there already.',
  413: 'That is too large.',
  429: 'Too many requests; wait a minute and try again.',
  503: 'The server cannot do that right now; try again shortly.',
};

export interface RequestOptions {
  method?: string;
  body?: unknown;
  /** For sign-in requests: a 401 is an answer, not a lost session. */
  signIn?: boolean;
}

export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const method = options.method ?? 'GET';
  const headers: Record<string, string> = { accept: 'application/json' };
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['x-csrf-token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, credentials: 'same-origin', body: options.body === undefined ? null : JSON.stringify(options.body) });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached; check your connection and try again.');
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (res.ok) return data as T;
  const err = (data as { error?: { code?: string; message?: string; details?: unknown } } | null)?.error;
  if (res.status === 401 && !options.signIn) onSessionLost?.();
  const message = options.signIn && err?.message ? sentence(err.message) : plainMessage(res.status, err?.code, err?.message);
  throw new ApiError(res.status, err?.code ?? 'error', message, fieldsOf(err?.details));
}

/** The server's messages are written for people except for validation codes, which get a general sentence here. */
function plainMessage(status: number, code: string | undefined, message: string | undefined): string {
  if (code === 'validation') return 'Some of what you entered is not valid; see the marked fields.';
  if (status >= 500 && status !== 503) return 'Something went wrong on the server; try again.';
  if (message && status !== 401) return sentence(message);
  return STATUS_WORDS[status] ?? 'That did not work; try again.';
}

/** `[{ field: "body.name", message }]` → `{ name: "…" }` in plain words. */
function fieldsOf(details: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(details)) return out;
  for (const d of details as { field?: unknown; message?: unknown }[]) {
    if (typeof d.field !== 'string') continue;
    const name = d.field.replace(/^body\.?/, '').split('.')[0] || 'form';
    out[name] ??= plainField(typeof d.message === 'string' ? d.message : 'is not valid');
  }
  return out;
}

function sentence(message: string): string {
  return /[.!?]$/.test(message) ? message : `${message}.`;
}

function plainField(message: string): string {
  if (/must match format "email"/.test(message)) return 'Enter an email address, such as name@example.com.';
  if (/must NOT have more than (\d+) characters/.test(message)) return `Too long: at most ${/(\d+)/.exec(message)![1]} characters.`;
  if (/must NOT have fewer than 1 characters/.test(message)) return 'This is required.';
  if (/must match pattern/.test(message)) return 'Remove control characters from this.';
  if (/must match format "date-time"/.test(message)) return 'Enter a valid date.';
  if (/unknown field/.test(message)) return 'This field is not expected here.';
  const clean = message.charAt(0).toUpperCase() + message.slice(1);
  return clean.endsWith('.') ? clean : `${clean}.`;
}
