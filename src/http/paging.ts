import { Type } from 'typebox';
import { PAGE_DEFAULT, PAGE_MAX } from '../store/paging.js';
import type { KeyQuery, KeyState } from '../store/types.js';
import { Nullable } from './schemas.js';

/**
 * Query parameters and response fields every paged list shares. A list
 * answers `limit` items at most (default 100, at most 1,000) and `nextCursor`:
 * pass it back as `cursor` for the next page; null when nothing follows. A
 * filtered page may hold fewer than `limit` items and still name a cursor
 * (each request examines a bounded number of records): follow it until null.
 */
export const PageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: PAGE_MAX, default: PAGE_DEFAULT, description: `Items per page, 1-${PAGE_MAX}` })),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 1400, pattern: '^[A-Za-z0-9_-]+$', description: 'The nextCursor of the previous page' })),
};

export const NextCursor = Nullable(Type.String({ description: 'Pass as cursor for the next page; null when this is the last' }));

const STATES = ['all', 'active', 'revoked', 'expired'] as const;
export const StateQuery = (fallback: (typeof STATES)[number]) =>
  Type.Optional(Type.Union(STATES.map((s) => Type.Literal(s)), { default: fallback, description: 'Only keys in this state' }));

export const NamePrefixQuery = Type.Optional(Type.String({ minLength: 1, maxLength: 100, description: 'Only keys whose name starts with this' }));
export const AddressPrefixQuery = Type.Optional(Type.String({ minLength: 1, maxLength: 254, description: 'Only addresses that start with this (case-insensitive)' }));

/** The store query for a validated request's paging and key filters. */
export function keyQuery(q: { limit?: number; cursor?: string; state?: (typeof STATES)[number]; namePrefix?: string; addressPrefix?: string }): KeyQuery {
  return {
    limit: q.limit ?? PAGE_DEFAULT,
    cursor: q.cursor ?? null,
    ...(q.state !== undefined && q.state !== 'all' && { state: q.state as KeyState }),
    ...(q.namePrefix !== undefined && { namePrefix: q.namePrefix }),
    ...(q.addressPrefix !== undefined && { addressPrefix: q.addressPrefix }),
  };
}
