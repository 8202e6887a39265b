import { encode } from '@msgpack/msgpack';
import { describe, expect, it } from 'vitest';
import { decodeExport, encodeExport, MalformedBlobError } from '../../src/keys/export-codec.js';
import { newKey } from '../../src/keys/new-key.js';

describe('export codec', () => {
  it('round-trips a record without its last-use fields and never contains the key', () => {
    const { key, record } = newKey({ name: 'Prod', scopes: ['*'], account: 'a@example.com', expiresAt: '2030-01-01T00:00:00.000Z', allowedIps: ['10.0.0.0/8'] });
    const used = { ...record, lastUsedAt: '2026-01-01T00:00:00.000Z', lastUsedIp: '1.2.3.4', lastUsedProtocol: 'imap' };
    const blob = encodeExport(used);
    expect(blob).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(blob).not.toContain(key);
    expect(Buffer.from(blob, 'base64url').toString('latin1')).not.toContain(key);
    expect(decodeExport(blob)).toEqual(record);
  });

  it('keeps the canary mark and sending limits, so an imported canary is still one', () => {
    const { record } = newKey({ name: 'bait', scopes: ['imap'], account: 'a@example.com', canary: true, limits: { messagesPerHour: 5 } });
    expect(decodeExport(encodeExport(record))).toMatchObject({ canary: true, limits: { messagesPerHour: 5 } });
  });

  it.each([
    ['empty', ''],
    ['not base64url', 'abc$%'],
    ['not msgpack', Buffer.from([0xc1, 0xc1]).toString('base64url')],
    ['an array', Buffer.from(encode([1, 2])).toString('base64url')],
    ['wrong version', Buffer.from(encode({ v: 9 })).toString('base64url')],
    ['bad hash', Buffer.from(encode({ v: 1, id: 'x', hash: 'zz', name: 'n', scopes: ['*'], createdAt: '2026-01-01T00:00:00Z' })).toString('base64url')],
    ['unknown scope', Buffer.from(encode({ v: 1, id: 'x', hash: 'a'.repeat(64), name: 'n', scopes: ['root'], createdAt: '2026-01-01T00:00:00Z' })).toString('base64url')],
    ['bad date', Buffer.from(encode({ v: 1, id: 'x', hash: 'a'.repeat(64), name: 'n', scopes: ['*'], createdAt: 'yesterday' })).toString('base64url')],
    ['bad cidr', Buffer.from(encode({ v: 1, id: 'x', hash: 'a'.repeat(64), name: 'n', scopes: ['*'], createdAt: '2026-01-01T00:00:00Z', allowedIps: ['nope'] })).toString('base64url')],
    ['an account that is no address', Buffer.from(encode({ v: 1, id: 'x', hash: 'a'.repeat(64), name: 'n', scopes: ['*'], createdAt: '2026-01-01T00:00:00Z', account: 'nobody' })).toString('base64url')],
    ['a name with a bidi override', Buffer.from(encode({ v: 1, id: 'x', hash: 'a'.repeat(64), name: 'a\u202eb', scopes: ['*'], createdAt: '2026-01-01T00:00:00Z' })).toString('base64url')],
    ['a canary mark that is no boolean', Buffer.from(encode({ v: 1, id: 'x', hash: 'a'.repeat(64), name: 'n', scopes: ['*'], createdAt: '2026-01-01T00:00:00Z', canary: 'yes' })).toString('base64url')],
    ['a negative limit', Buffer.from(encode({ v: 1, id: 'x', hash: 'a'.repeat(64), name: 'n', scopes: ['*'], createdAt: '2026-01-01T00:00:00Z', limits: { messagesPerHour: -1 } })).toString('base64url')],
  ])('refuses %s', (_label, blob) => {
    expect(() => decodeExport(blob)).toThrow(MalformedBlobError);
  });

  it('stores the account canonical, as every other entrance does, so the key matches logins', () => {
    const record = newKey({ name: 'n', scopes: ['imap'] }).record;
    expect(decodeExport(encodeExport({ ...record, account: ' Alice@Example.COM ' })).account).toBe('alice@example.com');
  });
});
