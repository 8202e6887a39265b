import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRedisStore } from '../../../src/store/redis.js';
import type { KeyStore } from '../../../src/store/types.js';
import { issueKey } from '../../../src/services/keys.js';
import { REDIS_SKIP_REASON, redisAvailable, startRedis, type RedisServer } from '../../helpers/redis-server.js';
import { type SingleKeygate, sleep, startKeygate } from '../../helpers/keygate.js';
import { LineClient } from '../../helpers/line-client.js';
import { startTcpProxy, type TcpProxy } from '../../helpers/tcp-proxy.js';

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

describe.skipIf(!haveRedis)('revocations that happen while an instance is cut off from Redis events', () => {
  let redis: RedisServer;
  let proxy: TcpProxy;
  let storeA: KeyStore;
  let storeB: KeyStore;
  let b: SingleKeygate;
  const namespace = `split${Date.now()}`;

  beforeAll(async () => {
    redis = await startRedis();
    // Instance B reaches Redis through a relay the test controls; instance A directly.
    proxy = await startTcpProxy({ host: '127.0.0.1', port: redis.port });
    storeA = await openRedisStore(redis.url, { namespace, touchIntervalMs: 50 });
    storeB = await openRedisStore(`redis://127.0.0.1:${proxy.port}`, { namespace, touchIntervalMs: 50 });
    // The periodic re-check stays at its 30 s default: what ends the sessions here is the re-check after resubscribing.
    b = await startKeygate({ store: storeB, limiter: null });
  });
  afterAll(async () => {
    await b?.close();
    await storeA?.close();
    await storeB?.close();
    await proxy?.stop();
    await redis?.stop();
  });

  /** Resolves once `store` answers again (after a Redis restart). */
  async function answering(store: KeyStore): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!(await store.ping().then(() => true, () => false))) {
      if (Date.now() > deadline) throw new Error('store did not come back');
      await sleep(20);
    }
  }

  /** A fresh key and an IMAP session logged in with it on instance B. */
  async function sessionOnB(): Promise<{ id: string; client: LineClient }> {
    await answering(storeA);
    await answering(storeB);
    const made = await issueKey(storeA, 'operator', { name: 'phone', scopes: ['imap'], account: ACCOUNT });
    const client = await LineClient.connect(b.port('imap'));
    await client.line();
    expect(await client.command('a', `LOGIN ${ACCOUNT} ${made.key}`)).toMatch(/^a OK /);
    return { id: made.record.id, client };
  }

  /** Revokes through A, retrying while A has not reconnected yet (as an operator's retry would). */
  async function revokeThroughA(id: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await storeA.revokeKey(id, new Date().toISOString());
        return;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(20);
      }
    }
  }

  it('revoked 0.13 s after Redis comes back, 20 times: no IMAP session on the other instance survives', async () => {
    const survivors: number[] = [];
    let raced = 0;
    for (let trial = 0; trial < 20; trial++) {
      const { id, client } = await sessionOnB();
      // Down long enough that B's subscriber is in a reconnect backoff of several hundred ms when Redis returns.
      await redis.restart(() => sleep(700));
      await sleep(130);
      // The revocation comes through an instance whose connection is up already (a fresh one: the CLI, or another Keygate).
      const fresh = await openRedisStore(redis.url, { namespace, touchIntervalMs: 50 });
      try {
        if (!proxy.connections().some((c) => !c.closed && c.opening.includes('keygate-events') && c.opening.includes('subscribe'))) raced++;
        await fresh.revokeKey(id, new Date().toISOString());
      } finally {
        await fresh.close();
      }
      const bye = await client.line(6000).catch(() => null);
      if (bye !== '* BYE Session revoked') survivors.push(trial);
      client.destroy();
    }
    expect(survivors).toEqual([]);
    // The race was run: in some trials B's subscriber was not back yet when the key was revoked.
    expect(raced).toBeGreaterThan(0);
    expect(b.logs.some((l) => l.msg === 'store event subscription resumed after a disconnect; re-checking open sessions')).toBe(true);
  }, 240_000);

  it('a revocation made while B’s subscriber is split from Redis ends B’s session once the subscriber reconnects', async () => {
    const { id, client } = await sessionOnB();
    const subscriber = proxy.connections().find((c) => c.opening.includes('keygate-events'));
    expect(subscriber).toBeDefined();
    subscriber!.blackhole();
    await revokeThroughA(id);
    // The event is lost on the way: the session lives on, and still answers.
    expect(await client.command('n', 'NOOP')).toBe('n OK NOOP completed');
    // The split ends the way a dead TCP connection does; ioredis reconnects and resubscribes.
    subscriber!.cut();
    expect(await client.line(6000)).toBe('* BYE Session revoked');
    const ended = b.logs.find((l) => l.msg === 'session re-check ended sessions an event had not') as { trigger?: string; ended?: Record<string, number> } | undefined;
    expect(ended).toMatchObject({ trigger: 'resubscribe', ended: { revoked: 1 } });
    client.destroy();
  }, 30_000);
});

describe.skipIf(!haveRedis)('a split that never heals', () => {
  it('the periodic re-check ends a session whose revocation event was lost', async () => {
    const redis = await startRedis();
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: redis.port });
    const namespace = `heal${Date.now()}`;
    const storeA = await openRedisStore(redis.url, { namespace, touchIntervalMs: 50 });
    const storeB = await openRedisStore(`redis://127.0.0.1:${proxy.port}`, { namespace, touchIntervalMs: 50 });
    const b = await startKeygate({ store: storeB, limiter: null, flags: { 'sessions.recheckInterval': '500ms' } });
    try {
      const made = await issueKey(storeA, 'operator', { name: 'phone', scopes: ['imap'], account: ACCOUNT });
      const keep = await issueKey(storeA, 'operator', { name: 'laptop', scopes: ['imap'], account: ACCOUNT });
      const client = await LineClient.connect(b.port('imap'));
      await client.line();
      expect(await client.command('a', `LOGIN ${ACCOUNT} ${made.key}`)).toMatch(/^a OK /);
      const other = await LineClient.connect(b.port('imap'));
      await other.line();
      expect(await other.command('a', `LOGIN ${ACCOUNT} ${keep.key}`)).toMatch(/^a OK /);
      proxy.connections().find((c) => c.opening.includes('keygate-events'))!.blackhole();
      await storeA.revokeKey(made.record.id, new Date().toISOString());
      expect(await client.line(3000)).toBe('* BYE Session revoked');
      expect(b.logs.find((l) => l.msg === 'session re-check ended sessions an event had not')).toMatchObject({ trigger: 'periodic', ended: { revoked: 1 } });
      // The other key's session is untouched.
      expect(await other.command('n', 'NOOP')).toBe('n OK NOOP completed');
      client.destroy();
      other.destroy();
    } finally {
      await b.close();
      await storeA.close();
      await storeB.close();
      await proxy.stop();
      await redis.stop();
    }
  }, 30_000);
});

if (!haveRedis) it.skip(REDIS_SKIP_REASON, () => {});
