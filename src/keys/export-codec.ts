import { decode, encode } from '@msgpack/msgpack';
import { isValidCidr } from './cidr.js';
import { HASH_RE } from './format.js';
import { keyNameProblem, textProblem } from './names.js';
import { looksLikeAddress, normalizeAddress, type KeyRecord } from './record.js';
import { isScope, type Scope } from './scopes.js';
import { parseSendingLimits } from '../limits/sending-limits.js';

/**
 * Export blob: base64url(msgpack(record)), versioned. It carries the key's hash
 * and metadata, never the key, so a blob is not a secret. Last-use fields stay
 * behind: they describe one installation, not the key.
 */
const VERSION = 1;


export class MalformedBlobError extends Error {
  constructor(detail: string) {
    super(`malformed token blob: ${detail}`);
    this.name = 'MalformedBlobError';
  }
}

export function encodeExport(record: KeyRecord): string {
  const { lastUsedAt: _a, lastUsedIp: _b, lastUsedProtocol: _c, ...rest } = record;
  return Buffer.from(encode({ v: VERSION, ...rest })).toString('base64url');
}

const BLOB_RE = /^[A-Za-z0-9_-]+$/;
const MAX_BLOB = 16 * 1024;

/** An imported name obeys the rules of a typed one: it is shown in lists, tables and profiles. */
function keyName(name: string): string {
  if (keyNameProblem(name.trim()) !== null) throw new MalformedBlobError('field "name"');
  return name.trim();
}

/** Decodes and validates a blob. Throws MalformedBlobError naming the first problem. */
export function decodeExport(blob: string): KeyRecord {
  const text = blob.trim();
  if (text.length === 0 || text.length > MAX_BLOB || !BLOB_RE.test(text)) throw new MalformedBlobError('not base64url');
  let raw: unknown;
  try {
    raw = decode(Buffer.from(text, 'base64url'));
  } catch {
    throw new MalformedBlobError('not msgpack');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new MalformedBlobError('not a record');
  const o = raw as Record<string, unknown>;
  if (o.v !== VERSION) throw new MalformedBlobError(`unsupported version ${String(o.v)}`);

  const str = (k: string): string => {
    const v = o[k];
    if (typeof v !== 'string' || v.length === 0 || v.length > 1000) throw new MalformedBlobError(`field "${k}"`);
    return v;
  };
  const optStr = (k: string): string | null => (o[k] === null || o[k] === undefined ? null : str(k));
  const optDate = (k: string): string | null => {
    const v = optStr(k);
    if (v !== null && Number.isNaN(Date.parse(v))) throw new MalformedBlobError(`field "${k}" is not a date`);
    return v;
  };

  const optText = (k: string): string | null => {
    const v = optStr(k);
    if (v !== null && textProblem(v) !== null) throw new MalformedBlobError(`field "${k}"`);
    return v;
  };

  // Stored canonical, as every other entrance stores it, or the key would never match a login.
  const optAddress = (k: string): string | null => {
    const v = optStr(k);
    if (v !== null && !looksLikeAddress(v)) throw new MalformedBlobError(`field "${k}"`);
    return v === null ? null : normalizeAddress(v);
  };

  const hash = str('hash');
  if (!HASH_RE.test(hash)) throw new MalformedBlobError('field "hash"');
  const scopes = o.scopes;
  if (!Array.isArray(scopes) || scopes.length === 0 || !scopes.every((s) => typeof s === 'string' && isScope(s))) {
    throw new MalformedBlobError('field "scopes"');
  }
  const ips = o.allowedIps;
  if (ips !== null && ips !== undefined && (!Array.isArray(ips) || !ips.every((c) => typeof c === 'string' && isValidCidr(c)))) {
    throw new MalformedBlobError('field "allowedIps"');
  }
  if (o.canary !== undefined && o.canary !== null && typeof o.canary !== 'boolean') throw new MalformedBlobError('field "canary"');
  const limits = parseSendingLimits(o.limits);
  if ('problem' in limits) throw new MalformedBlobError('field "limits"');
  const createdAt = optDate('createdAt');
  if (createdAt === null) throw new MalformedBlobError('field "createdAt"');

  return {
    id: str('id'),
    hash,
    name: keyName(str('name')),
    account: optAddress('account'),
    scopes: scopes as Scope[],
    createdAt,
    expiresAt: optDate('expiresAt'),
    allowedIps: (ips as string[] | null | undefined) ?? null,
    revokedAt: optDate('revokedAt'),
    lastUsedAt: null,
    lastUsedIp: null,
    lastUsedProtocol: null,
    platform: optStr('platform'),
    deviceId: optText('deviceId'),
    rotatedFrom: optStr('rotatedFrom'),
    // A canary stays a canary wherever it is imported (blobs from before the field are plain keys).
    canary: o.canary === true,
    limits: limits.limits,
  };
}
