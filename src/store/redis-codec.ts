import type { KeyRecord, SendingLimits } from '../keys/record.js';
import type { Scope } from '../keys/scopes.js';
import { SENDING_LIMIT_FIELDS } from '../limits/sending-limits.js';
import { expiresMs } from './sqlite-schema.js';
import { MAX_ORDER_MS, orderMs, type KeyPosition } from './paging.js';

/*
 * The compact form of a key record in Redis (schema 2). Memory per key is
 * mostly fixed costs multiplied by a million, so every stored string is as
 * short as it can be while staying exact:
 *  - an id that is a canonical UUID is stored as its 16 bytes in base64url
 *    (22 characters), any other id as "." + the id;
 *  - a SHA-256 hex hash as its 32 bytes in base64url (43), else "." + it;
 *  - a date in toISOString form as base-36 milliseconds, any other date
 *    text as "=" + the text;
 *  - the record is a Redis hash of one-letter fields (listpack-encoded while
 *    every value is at most 64 bytes: the usual record), null fields absent;
 *  - a canary is `y` = "1" (absent: not one); sending limits are `l` = the
 *    limits in SENDING_LIMIT_FIELDS order, comma-separated, empty where a
 *    limit is unset ("100,,5000": at most 23 bytes, where JSON could pass 64).
 * `o` is the key's sort key: creation ms (11 hex) + store sequence (9 hex),
 * written by the insert script; the creation date is derived from it when it
 * was canonical, so it is not stored twice.
 */

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const HEX64_RE = /^[0-9a-f]{64}$/;
const B64_16 = /^[A-Za-z0-9_-]{22}$/;

export function compactId(id: string): string {
  if (!UUID_RE.test(id)) return `.${id}`;
  return Buffer.from(id.replaceAll('-', ''), 'hex').toString('base64url');
}

export function expandId(c: string): string {
  if (c.startsWith('.')) return c.slice(1);
  if (!B64_16.test(c)) throw new Error(`not a stored key id: ${JSON.stringify(c)}`);
  const h = Buffer.from(c, 'base64url').toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function compactHash(hash: string): string {
  return HEX64_RE.test(hash) ? Buffer.from(hash, 'hex').toString('base64url') : `.${hash}`;
}

export function expandHash(c: string): string {
  return c.startsWith('.') ? c.slice(1) : Buffer.from(c, 'base64url').toString('hex');
}

export function compactDate(iso: string): string {
  const ms = Date.parse(iso);
  return Number.isFinite(ms) && ms >= 0 && new Date(ms).toISOString() === iso ? ms.toString(36) : `=${iso}`;
}

export function expandDate(c: string): string {
  return c.startsWith('=') ? c.slice(1) : new Date(parseInt(c, 36)).toISOString();
}

/**
 * Free text (names, devices): as it is, unless Redis could not keep it
 * exactly (a lone UTF-16 surrogate has no UTF-8 form) or it starts with the
 * escape mark itself; then "\u0001" + its JSON.
 */
const TEXT_ESCAPE = '\u0001';
const LONE_SURROGATE = /\p{Cs}/u;

export function compactText(s: string): string {
  return LONE_SURROGATE.test(s) || s.startsWith(TEXT_ESCAPE) ? TEXT_ESCAPE + JSON.stringify(s) : s;
}

export function expandText(c: string): string {
  return c.startsWith(TEXT_ESCAPE) ? (JSON.parse(c.slice(1)) as string) : c;
}

/** Sort key: 11 hex digits of creation ms + 9 of sequence, so lexical order is (time, creation order). */
export const SORT_KEY_LENGTH = 20;

export function sortKey(p: KeyPosition): string {
  return p.ms.toString(16).padStart(11, '0') + p.seq.toString(16).padStart(9, '0');
}

export function positionOf(sortKeyText: string): KeyPosition {
  return { ms: parseInt(sortKeyText.slice(0, 11), 16), seq: parseInt(sortKeyText.slice(11, SORT_KEY_LENGTH), 16) };
}

/** The record's fields (without `o`, which the insert script sets) as HSET arguments. */
export function recordFields(r: KeyRecord): string[] {
  const f: string[] = ['h', compactHash(r.hash), 'n', compactText(r.name), 's', r.scopes.join(' ')];
  const canonicalCreated = new Date(orderMs(r.createdAt)).toISOString() === r.createdAt;
  if (!canonicalCreated) f.push('c', r.createdAt);
  if (r.account !== null) f.push('a', r.account);
  if (r.expiresAt !== null) f.push('e', compactDate(r.expiresAt));
  if (r.allowedIps !== null) f.push('i', r.allowedIps.join(' '));
  if (r.revokedAt !== null) f.push('r', compactDate(r.revokedAt));
  if (r.lastUsedAt !== null) f.push('u', compactDate(r.lastUsedAt));
  if (r.lastUsedIp !== null) f.push('ui', compactText(r.lastUsedIp));
  if (r.lastUsedProtocol !== null) f.push('up', compactText(r.lastUsedProtocol));
  if (r.platform !== null) f.push('p', compactText(r.platform));
  if (r.deviceId !== null) f.push('d', compactText(r.deviceId));
  if (r.rotatedFrom !== null) f.push('f', compactId(r.rotatedFrom));
  if (r.canary === true) f.push('y', '1');
  if (r.limits) f.push('l', compactLimits(r.limits));
  return f;
}

function compactLimits(l: SendingLimits): string {
  return SENDING_LIMIT_FIELDS.map((k) => (l[k] === undefined ? '' : String(l[k]))).join(',');
}

function expandLimits(c: string): SendingLimits | null {
  const out: SendingLimits = {};
  c.split(',').forEach((v, i) => {
    const field = SENDING_LIMIT_FIELDS[i];
    if (field !== undefined && v !== '') out[field] = Number(v);
  });
  return Object.keys(out).length > 0 ? out : null;
}

/** A stored hash back to the record; null when there is none (an empty HGETALL). */
export function parseRecord(idc: string, h: Record<string, string>): KeyRecord | null {
  if (h.o === undefined) return null;
  const opt = <T>(v: string | undefined, f: (s: string) => T): T | null => (v === undefined ? null : f(v));
  const list = (s: string): string[] => (s === '' ? [] : s.split(' '));
  return {
    id: expandId(idc),
    hash: expandHash(h.h ?? ''),
    name: expandText(h.n ?? ''),
    account: h.a ?? null,
    scopes: list(h.s ?? '') as Scope[],
    createdAt: h.c ?? new Date(positionOf(h.o).ms).toISOString(),
    expiresAt: opt(h.e, expandDate),
    allowedIps: opt(h.i, list),
    revokedAt: opt(h.r, expandDate),
    lastUsedAt: opt(h.u, expandDate),
    lastUsedIp: opt(h.ui, expandText),
    lastUsedProtocol: opt(h.up, expandText),
    platform: opt(h.p, expandText),
    deviceId: opt(h.d, expandText),
    rotatedFrom: opt(h.f, expandId),
    canary: h.y === '1',
    limits: h.l === undefined ? null : expandLimits(h.l),
  };
}

/** HGETALL's flat reply (from a script) as an object. */
export function pairs(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(flat)) return out;
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

/**
 * What the insert scripts read besides the fields (see `read_spec` in
 * redis-scripts.ts): id, hash, creation ms, expiry ms, account, device,
 * revoked flag, then the field list.
 */
export function keySpec(r: KeyRecord, fields: string[] = recordFields(r)): string[] {
  const exp = expiresMs(r.expiresAt);
  return [
    compactId(r.id),
    compactHash(r.hash),
    String(orderMs(r.createdAt)),
    exp === null ? '' : String(Math.max(-MAX_ORDER_MS, exp)),
    r.account ?? '',
    r.deviceId === null ? '' : compactText(r.deviceId),
    r.revokedAt === null ? '' : '1',
    String(fields.length),
    ...fields,
  ];
}
