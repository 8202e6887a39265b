import { normalizeAddress, type KeyRecord } from '../keys/record.js';
import { InvalidCursorError } from './errors.js';
import type { AccountQuery, KeyQuery, KeyState } from './types.js';

/** Page sizes every list accepts: `limit` 1-1000, 100 when absent. */
export const PAGE_DEFAULT = 100;
export const PAGE_MAX = 1000;
/**
 * Records one page call may examine. A filter that matches little (a name
 * prefix, a state) must not turn one request into a walk of the store: the
 * page stops here and hands back a cursor, so its cost has a ceiling whatever
 * the store holds.
 */
export const SCAN_BUDGET = 2000;

/** Largest creation time that orders keys (16^11 - 1 ms, in the year 2527); earlier than 1970 orders as 1970. */
export const MAX_ORDER_MS = 0xfffffffffff;
/** Largest store sequence a cursor may name (16^9 - 1: the Redis sort key has nine hex digits for it). */
export const MAX_SEQ = 0xfffffffff;

export function pageLimit(limit: number | undefined): number {
  if (limit === undefined || !Number.isFinite(limit)) return PAGE_DEFAULT;
  return Math.min(PAGE_MAX, Math.max(1, Math.floor(limit)));
}

/** Where a key sorts: its creation time in ms, clamped to what every store can order. */
export function orderMs(createdAt: string): number {
  const ms = Date.parse(createdAt);
  if (!Number.isFinite(ms) || ms < 0) return 0;
  return Math.min(ms, MAX_ORDER_MS);
}

/** A key list's position: the last key shown, as (creation ms, store sequence). Opaque to clients. */
export interface KeyPosition {
  ms: number;
  seq: number;
}

export function encodeKeyCursor(p: KeyPosition): string {
  return Buffer.from(`k${p.ms}.${p.seq}`).toString('base64url');
}

/** InvalidCursorError for anything encodeKeyCursor did not make. */
export function decodeKeyCursor(cursor: string): KeyPosition {
  const m = /^k(\d{1,15})\.(\d{1,15})$/.exec(fromBase64url(cursor));
  if (!m) throw new InvalidCursorError();
  const ms = Number(m[1]);
  const seq = Number(m[2]);
  if (ms > MAX_ORDER_MS || seq > MAX_SEQ) throw new InvalidCursorError();
  return { ms, seq };
}

export function encodeAccountCursor(address: string): string {
  return Buffer.from(`a${address}`).toString('base64url');
}

export function decodeAccountCursor(cursor: string): string {
  const text = fromBase64url(cursor);
  if (!text.startsWith('a') || text.length < 2 || text.length > 1000) throw new InvalidCursorError();
  return text.slice(1);
}

function fromBase64url(cursor: string): string {
  if (cursor.length === 0 || cursor.length > 1400 || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw new InvalidCursorError();
  return Buffer.from(cursor, 'base64url').toString('utf8');
}

/** The key's state at `nowMs`, as isActive judges it (an unreadable expiry is past). */
export function keyState(k: Pick<KeyRecord, 'revokedAt' | 'expiresAt'>, nowMs: number): KeyState {
  if (k.revokedAt !== null) return 'revoked';
  return k.expiresAt !== null && !(Date.parse(k.expiresAt) > nowMs) ? 'expired' : 'active';
}

/** A KeyQuery with its defaults applied and its addresses normalised, as the stores read it. */
export interface KeyScan {
  account: string | null;
  state: KeyState | null;
  namePrefix: string;
  addressPrefix: string;
  limit: number;
  after: KeyPosition | null;
  nowMs: number;
}

export function keyScan(q: KeyQuery = {}): KeyScan {
  return {
    account: q.account === undefined ? null : normalizeAddress(q.account),
    state: q.state ?? null,
    namePrefix: q.namePrefix ?? '',
    addressPrefix: q.addressPrefix === undefined ? '' : q.addressPrefix.trim().toLowerCase(),
    limit: pageLimit(q.limit),
    after: q.cursor ? decodeKeyCursor(q.cursor) : null,
    nowMs: (q.now ?? new Date()).getTime(),
  };
}

export interface AccountScan {
  addressPrefix: string;
  withUpstream: boolean;
  limit: number;
  after: string | null;
}

export function accountScan(q: AccountQuery = {}): AccountScan {
  return {
    addressPrefix: q.addressPrefix === undefined ? '' : q.addressPrefix.trim().toLowerCase(),
    withUpstream: q.withUpstream ?? false,
    limit: pageLimit(q.limit),
    after: q.cursor ? decodeAccountCursor(q.cursor) : null,
  };
}

/** Every page of a list, one after another: for tools and tests, never for a request path. */
export async function* allPages<T>(fetch: (cursor: string | null) => Promise<{ items: T[]; nextCursor: string | null }>): AsyncGenerator<T[]> {
  let cursor: string | null = null;
  do {
    const page = await fetch(cursor);
    yield page.items;
    cursor = page.nextCursor;
  } while (cursor !== null);
}
