import { createHash } from 'node:crypto';
import type { WebhookEndpoint } from '../store/activity.js';
import { isEventType, type EventType } from './types.js';

/** Longest URL and secret an endpoint may have, and the fewest secret characters. */
export const MAX_URL = 2048;
export const MAX_SECRET = 256;
export const MIN_SECRET = 16;

/** Why a webhook URL is unusable, or null: http(s), absolute, no credentials in it. */
export function endpointUrlProblem(url: string): string | null {
  if (url.length > MAX_URL) return `a URL of at most ${MAX_URL} characters`;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'an absolute http(s) URL';
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return 'an absolute http(s) URL';
  if (u.username !== '' || u.password !== '') return 'a URL without user or password (the signature authenticates Keygate)';
  return null;
}

interface ConfiguredEndpoint {
  url: string;
  secret: string;
  events?: EventType[];
}

/** Why `webhooks.endpoints` is not a valid list, or null. Never quotes a secret. */
export function configuredEndpointsProblem(text: string): string | null {
  if (text.trim() === '') return null;
  let list: unknown;
  try {
    list = JSON.parse(text);
  } catch {
    return 'expected a JSON array of {"url", "secret", "events"?}';
  }
  if (!Array.isArray(list)) return 'expected a JSON array of {"url", "secret", "events"?}';
  for (const [i, e] of list.entries()) {
    if (typeof e !== 'object' || e === null) return `entry ${i}: expected an object`;
    const { url, secret, events } = e as Record<string, unknown>;
    if (typeof url !== 'string') return `entry ${i}: url: expected a string`;
    const bad = endpointUrlProblem(url);
    if (bad) return `entry ${i}: url: expected ${bad}`;
    if (typeof secret !== 'string' || secret.length < MIN_SECRET || secret.length > MAX_SECRET) return `entry ${i}: secret: expected ${MIN_SECRET} to ${MAX_SECRET} characters`;
    if (events !== undefined && (!Array.isArray(events) || !events.every(isEventType))) return `entry ${i}: events: expected a list of event types`;
  }
  return null;
}

/**
 * The endpoints of `webhooks.endpoints` (validated with the configuration).
 * Their ids come from their URL, so a restart keeps their queue and status.
 */
export function configuredEndpoints(text: string): WebhookEndpoint[] {
  if (text.trim() === '') return [];
  return (JSON.parse(text) as ConfiguredEndpoint[]).map((e) => ({
    id: `cfg-${createHash('sha256').update(e.url).digest('hex').slice(0, 16)}`,
    url: e.url,
    secret: e.secret,
    events: e.events ?? null,
    createdAt: '1970-01-01T00:00:00.000Z',
  }));
}
