import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newKey } from '../../src/keys/new-key.js';
import type { AccountRecord, KeyRecord } from '../../src/keys/record.js';
import { allPages, keyState } from '../../src/store/paging.js';
import { openRedisStore } from '../../src/store/redis.js';
import type { KeyStore } from '../../src/store/types.js';
import { redisAvailable, redisCli, startRedis, type RedisServer } from '../helpers/redis-server.js';

/*
 * A deployment upgrading from the schema-1 Redis layout (before issue 17)
 * must lose no key: the first start moves every key to schema 2, later
 * starts move nothing, and two instances starting at once move each key once.
 */

const ns = (): string => 'm' + randomBytes(6).toString('hex');
const KEY_FIELDS = ['id', 'hash', 'name', 'account', 'scopes', 'createdAt', 'expiresAt', 'allowedIps', 'revokedAt', 'lastUsedAt', 'lastUsedIp', 'lastUsedProtocol', 'platform', 'deviceId', 'rotatedFrom'] as const;

/** Writes keys and accounts exactly as the schema-1 store did. */
async function writeSchema1(redis: Redis, namespace: string, keys: KeyRecord[], accounts: AccountRecord[] = []): Promise<void> {
  const p = `{${namespace}}:`;
  const first = (await redis.incrby(`${p}seq`, keys.length)) - keys.length;
  const pipe = redis.multi();
  keys.forEach((k, i) => {
    const member = `${String(first + i + 1).padStart(16, '0')}:${k.id}`;
    pipe.hset(`${p}key:${k.id}`, ...KEY_FIELDS.flatMap((f) => [f, JSON.stringify(k[f] ?? null)]));
    // Guard's schema-1 records also carry these two; records from before guard have neither.
    if (k.canary || k.limits) pipe.hset(`${p}key:${k.id}`, 'canary', JSON.stringify(k.canary === true), 'limits', JSON.stringify(k.limits ?? null));
    pipe.set(`${p}hash:${k.hash}`, k.id);
    pipe.zadd(`${p}keys`, Date.parse(k.createdAt), member);
    if (k.account !== null) pipe.zadd(`${p}acct-keys:${k.account}`, Date.parse(k.createdAt), member);
  });
  await pipe.exec();
  for (const a of accounts) {
    await redis.hset(`${p}account:${a.address}`, 'address', JSON.stringify(a.address), 'aliases', JSON.stringify(a.aliases), 'displayName', JSON.stringify(a.displayName), 'disabled', JSON.stringify(a.disabled), 'createdAt', JSON.stringify(a.createdAt), 'upstream', JSON.stringify(a.upstream));
    await redis.zadd(`${p}accounts`, 0, a.address);
  }
}

function schema1Keys(n: number, t0 = Date.parse('2026-01-01T00:00:00Z')): KeyRecord[] {
  return Array.from({ length: n }, (_, i) => {
    const { record } = newKey(
      {
        name: i % 11 === 0 ? `lone \ud800 ${i}` : `key ${i}`,
        scopes: ['smtp', 'imap'],
        account: i % 5 === 0 ? null : `u${i % 7}@example.com`,
        expiresAt: i % 6 === 0 ? '2020-01-01T00:00:00.000Z' : i % 13 === 0 ? '2099-01-01' : null,
        allowedIps: i % 8 === 0 ? [] : i % 9 === 0 ? ['10.0.0.0/8', '::1'] : null,
        deviceId: i % 10 === 1 ? `device ${i}` : null,
        platform: i % 10 === 1 ? 'android' : null,
        rotatedFrom: i % 12 === 0 ? 'not-a-uuid' : null,
        canary: i % 14 === 3,
        limits: i % 15 === 4 ? { recipientsPerDay: 1_000_000 } : i % 15 === 5 ? { messagesPerHour: 10, recipientsPerMessage: 5, recipientsPerDay: 100 } : null,
      },
      new Date(t0 + Math.min(i, 1000) * 10),
    );
    return {
      ...record,
      ...(i % 4 === 0 && { revokedAt: '2026-02-01T00:00:00.000Z' }),
      ...(i % 3 === 0 && { lastUsedAt: '2026-03-01T00:00:00.000Z', lastUsedIp: '192.0.2.1', lastUsedProtocol: 'pop3' }),
      ...(i === 2 && { id: 'Imported-ID-Not-A-UUID', createdAt: '2026-01-01T00:00:00+02:00' }),
    };
  });
}

async function everyKey(store: KeyStore): Promise<KeyRecord[]> {
  const out: KeyRecord[] = [];
  for await (const page of allPages((cursor) => store.listKeys({ cursor, limit: 1000 }))) out.push(...page);
  return out;
}

describe.skipIf(!redisAvailable())('Redis store: schema-1 data (before the compact layout)', () => {
  let server: RedisServer;
  let redis: Redis;
  beforeAll(async () => {
    server = await startRedis();
    redis = new Redis(server.url);
  });
  afterAll(async () => {
    redis?.disconnect();
    await server?.stop();
  });

  it('is migrated at the first start: every key and field kept, in order, counted, and nothing of schema 1 left', async () => {
    const namespace = ns();
    const keys = schema1Keys(1203);
    const upstream = { imap: { host: 'mail.example.com' } };
    await writeSchema1(redis, namespace, keys, [
      { address: 'u1@example.com', aliases: [], displayName: 'U1', disabled: false, createdAt: keys[0]!.createdAt, upstream },
      { address: 'u2@example.com', aliases: [], displayName: null, disabled: false, createdAt: keys[0]!.createdAt, upstream: null },
    ]);
    const log: { message: string; details: Record<string, unknown> }[] = [];
    const store = await openRedisStore(server.url, { namespace, onMigration: (message, details) => log.push({ message, details }) });
    try {
      expect(log.at(0)).toEqual({ message: 'Migrating the Redis store to schema 2', details: { keys: 1203 } });
      expect(log.at(-1)).toEqual({ message: 'Migrated the Redis store to schema 2', details: { keys: 1203 } });
      for (const k of keys) {
        expect(await store.findByHash(k.hash)).toEqual(k);
        expect(await store.getKey(k.id)).toEqual(k);
      }
      // Newest first, and the same-millisecond run in its schema-1 order (newest inserted first).
      const order = keys.map((k, i) => ({ k, i })).sort((a, b) => Date.parse(b.k.createdAt) - Date.parse(a.k.createdAt) || b.i - a.i);
      expect((await everyKey(store)).map((k) => k.id)).toEqual(order.map((x) => x.k.id));
      const now = new Date();
      const walked = { active: 0, revoked: 0, expired: 0 };
      for (const k of keys) walked[keyState(k, now.getTime())]++;
      expect(await store.countKeys(now)).toEqual(walked);
      expect((await store.listAccounts({ withUpstream: true })).items.map((a) => a.address)).toEqual(['u1@example.com']);
      expect(await store.activeKeys('u3@example.com')).toEqual(keys.filter((k) => k.account === 'u3@example.com' && keyState(k, now.getTime()) === 'active').sort((a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt) || keys.indexOf(b) - keys.indexOf(a)));
      // Device keys are found through the new per-device index.
      const device = keys.find((k) => k.deviceId !== null && k.revokedAt === null && k.account !== null)!;
      const { revoked } = await store.replaceDeviceKey(newKey({ name: 'new', scopes: ['smtp'], account: device.account, deviceId: device.deviceId }).record, now.toISOString());
      expect(revoked.map((k) => k.id)).toEqual([device.id]);
      const leftovers = await redisCli(server.port, '--scan', '--pattern', `{${namespace}}:*`);
      const names = leftovers.split('\n').filter(Boolean);
      expect(names.filter((n) => /:(key|hash|acct-keys):|:keys$/.test(n))).toEqual([]);
      expect(await redis.get(`{${namespace}}:schema`)).toBe('2');
    } finally {
      await store.close();
    }
    // Later starts read the schema mark and move nothing.
    const again: string[] = [];
    const second = await openRedisStore(server.url, { namespace, onMigration: (m) => again.push(m) });
    expect(await second.findByHash(keys[5]!.hash)).toEqual(keys[5]);
    await second.close();
    expect(again).toEqual([]);
  });

  it('two instances starting at once move every key once; a key a schema-1 instance writes later moves at the next start', async () => {
    const namespace = ns();
    const keys = schema1Keys(900);
    await writeSchema1(redis, namespace, keys);
    const [a, b] = await Promise.all([openRedisStore(server.url, { namespace }), openRedisStore(server.url, { namespace })]);
    try {
      const now = new Date();
      const walked = { active: 0, revoked: 0, expired: 0 };
      for (const k of keys) walked[keyState(k, now.getTime())]++;
      expect(await a.countKeys(now)).toEqual(walked);
      expect(await b.countKeys(now)).toEqual(walked);
      expect(await everyKey(b)).toHaveLength(900);
    } finally {
      await a.close();
      await b.close();
    }
    const late = schema1Keys(1, Date.parse('2026-06-01T00:00:00Z'))[0]!;
    await writeSchema1(redis, namespace, [late]);
    const c = await openRedisStore(server.url, { namespace });
    try {
      expect(await c.findByHash(late.hash)).toEqual(late);
      expect((await c.listKeys({ limit: 1 })).items[0]?.id).toBe(late.id);
      expect((await everyKey(c)).length).toBe(901);
    } finally {
      await c.close();
    }
  });
});
