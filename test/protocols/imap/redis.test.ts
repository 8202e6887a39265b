import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRedisStore } from '../../../src/store/redis.js';
import type { KeyStore } from '../../../src/store/types.js';
import { REDIS_SKIP_REASON, redisAvailable, startRedis, type RedisServer } from '../../helpers/redis-server.js';
import { type SingleKeygate, startKeygate } from '../../helpers/keygate.js';
import { LineClient } from '../../helpers/line-client.js';

const ACCOUNT = 'alice@example.com';

const haveRedis = redisAvailable();

describe.skipIf(!haveRedis)('two Keygate instances sharing one Redis', () => {
  let redis: RedisServer;
  let storeA: KeyStore;
  let storeB: KeyStore;
  let a: SingleKeygate;
  let b: SingleKeygate;

  beforeAll(async () => {
    redis = await startRedis();
    const namespace = `imap${Date.now()}`;
    storeA = await openRedisStore(redis.url, { namespace, touchIntervalMs: 50 });
    storeB = await openRedisStore(redis.url, { namespace, touchIntervalMs: 50 });
    a = await startKeygate({ store: storeA, flags: { 'dbs.redis': redis.url } });
    b = await startKeygate({ store: storeB, flags: { 'dbs.redis': redis.url } });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await storeA?.close();
    await storeB?.close();
    await redis?.stop();
  });

  it('a key issued on A logs in on B; revoked through A, the IMAP session on B ends within 1 s', async () => {
    const { key, id } = await a.issue(ACCOUNT, ['imap']);
    const c = await LineClient.connect(b.port('imaps'), { tls: true });
    await c.line();
    expect(await c.command('a', `LOGIN ${ACCOUNT} ${key}`)).toMatch(/^a OK /);
    expect(b.sessions.count('imap')).toBe(1);
    const started = Date.now();
    await storeA.revokeKey(id, new Date().toISOString());
    expect(await c.line(1000)).toBe('* BYE Session revoked');
    await c.closed;
    expect(Date.now() - started).toBeLessThan(1000);
    // And B now refuses the key like any other bad one.
    const again = await LineClient.connect(b.port('imap'));
    await again.line();
    expect(await again.command('b', `LOGIN ${ACCOUNT} ${key}`)).toBe('b NO [AUTHENTICATIONFAILED] Authentication failed');
    again.destroy();
  });

  it('login failures are counted across instances (Redis-backed limiter)', async () => {
    const limiterPrefix = `shared${Date.now()}`;
    const limited = await startKeygate({ store: storeA, limiterPrefix, flags: { 'dbs.redis': redis.url, 'auth.accountFailures': 2, 'auth.ipFailures': 1000, 'auth.failureDelay': '5ms' } });
    const other = await startKeygate({ store: storeB, limiterPrefix, flags: { 'dbs.redis': redis.url, 'auth.accountFailures': 2, 'auth.ipFailures': 1000, 'auth.failureDelay': '5ms' } });
    try {
      const bad = `kg_${'A'.repeat(49)}`;
      const c1 = await LineClient.connect(limited.port('imap'));
      await c1.line();
      const c2 = await LineClient.connect(other.port('imap'));
      await c2.line();
      expect(await c1.command('a', `LOGIN ${ACCOUNT} ${bad}`)).toMatch(/AUTHENTICATIONFAILED/);
      expect(await c2.command('a', `LOGIN ${ACCOUNT} ${bad}`)).toMatch(/AUTHENTICATIONFAILED/);
      expect(await c1.command('b', `LOGIN ${ACCOUNT} ${bad}`)).toMatch(/^b NO \[UNAVAILABLE\]/);
      c1.destroy();
      c2.destroy();
    } finally {
      await limited.close();
      await other.close();
    }
  });
});

if (!haveRedis) it.skip(REDIS_SKIP_REASON, () => {});
