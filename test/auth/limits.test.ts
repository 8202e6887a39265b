import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator } from '../../src/auth/authenticate.js';
import { accountKeyBucket, createLoginLimiter, ipBucket, type LoginLimiterOptions, type LoginLimiterWithClose } from '../../src/auth/limits.js';
import { DEFAULTS, type Config } from '../../src/config.js';
import { generateKey, hashKey } from '../../src/keys/format.js';
import { newKey } from '../../src/keys/new-key.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { captureLogger, silentLogger, sleep } from '../tls/helpers.js';

type Limits = Partial<Config['auth']>;
const conf = (auth: Limits, redis = ''): Pick<Config, 'auth' | 'dbs'> => ({ auth: { ...DEFAULTS.auth, ...auth }, dbs: { redis } });

const limiters: LoginLimiterWithClose[] = [];
afterEach(async () => {
  await Promise.all(limiters.splice(0).map((l) => l.close()));
});

async function make(auth: Limits, redis = '', options: LoginLimiterOptions = {}, logger = silentLogger()): Promise<LoginLimiterWithClose> {
  const l = await createLoginLimiter(conf(auth, redis), logger, options);
  limiters.push(l);
  return l;
}

const keyHash = (): string => hashKey(generateKey());
const req = (ip: string, account: string, hash: string) => ({ ip, account, keyHash: hash });

/** The shared behaviour, run against the memory and the Redis backend. */
function behaviour(backend: () => { redis: string; prefix: () => string }) {
  const limiter = (auth: Limits, options: LoginLimiterOptions = {}) => make(auth, backend().redis, { keyPrefix: backend().prefix(), ...options });

  it('trips the IP limit after N failures, for any account, and only for that IP', async () => {
    const l = await limiter({ ipFailures: 4, accountFailures: 100 });
    for (let i = 0; i < 3; i++) {
      expect(await l.allow(req('192.0.2.1', `u${i}@example.com`, keyHash()))).toBe(true);
      await l.recordFailure(req('192.0.2.1', `u${i}@example.com`, keyHash()));
    }
    expect(await l.allow(req('192.0.2.1', 'someone@example.com', keyHash()))).toBe(true);
    await l.recordFailure(req('192.0.2.1', 'u3@example.com', keyHash()));
    expect(await l.allow(req('192.0.2.1', 'someone@example.com', keyHash()))).toBe(false);
    expect(await l.allow(req('::ffff:192.0.2.1', 'someone@example.com', keyHash()))).toBe(false);
    expect(await l.allow(req('192.0.2.2', 'someone@example.com', keyHash()))).toBe(true);
  });

  it('trips (account, stale key) while the same account with a valid key is still allowed, from the same IP', async () => {
    const l = await limiter({ ipFailures: 100, accountFailures: 3 });
    const stale = keyHash();
    const valid = keyHash();
    for (let i = 0; i < 3; i++) await l.recordFailure(req('198.51.100.5', 'alice@example.com', stale));
    expect(await l.allow(req('198.51.100.5', 'alice@example.com', stale))).toBe(false);
    expect(await l.allow(req('203.0.113.9', 'Alice@Example.com', stale))).toBe(false);
    expect(await l.allow(req('198.51.100.5', 'alice@example.com', valid))).toBe(true);
    expect(await l.allow(req('203.0.113.9', 'alice@example.com', valid))).toBe(true);
    expect(await l.allow(req('198.51.100.5', 'bob@example.com', stale))).toBe(true);
  });

  it('resets the (account, key) count on a success', async () => {
    const l = await limiter({ ipFailures: 100, accountFailures: 3 });
    const h = keyHash();
    for (let i = 0; i < 2; i++) await l.recordFailure(req('192.0.2.7', 'c@example.com', h));
    await l.recordSuccess!(req('192.0.2.7', 'c@example.com', h));
    for (let i = 0; i < 2; i++) await l.recordFailure(req('192.0.2.7', 'c@example.com', h));
    expect(await l.allow(req('192.0.2.7', 'c@example.com', h))).toBe(true);
  });

  it('forgets failures when the window ends', async () => {
    const l = await limiter({ ipFailures: 2, accountFailures: 2, failureWindow: 1000 });
    const h = keyHash();
    await l.recordFailure(req('192.0.2.9', 'd@example.com', h));
    await l.recordFailure(req('192.0.2.9', 'd@example.com', h));
    expect(await l.allow(req('192.0.2.9', 'd@example.com', h))).toBe(false);
    await sleep(1300);
    expect(await l.allow(req('192.0.2.9', 'd@example.com', h))).toBe(true);
  });

  it('counts an IPv6 client by its /64', async () => {
    const l = await limiter({ ipFailures: 2, accountFailures: 100 });
    await l.recordFailure(req('2001:db8:1:2::10', 'e@example.com', keyHash()));
    await l.recordFailure(req('2001:db8:1:2:ffff::99', 'e@example.com', keyHash()));
    expect(await l.allow(req('2001:db8:1:2:abcd::1', 'x@example.com', keyHash()))).toBe(false);
    expect(await l.allow(req('2001:db8:1:3::10', 'x@example.com', keyHash()))).toBe(true);
  });

  it('with dedupeMs, counts a repeated identical failure (a client retrying each mechanism) once', async () => {
    const l = await limiter({ ipFailures: 3, accountFailures: 2 }, { dedupeMs: 5000 });
    const h = keyHash();
    for (let i = 0; i < 3; i++) await l.recordFailure(req('192.0.2.30', 'f@example.com', h)); // one login, three mechanisms
    expect(await l.allow(req('192.0.2.30', 'f@example.com', h))).toBe(true);
    await l.recordFailure(req('192.0.2.30', 'f@example.com', keyHash())); // a different key is a new attempt
    await l.recordFailure(req('192.0.2.30', 'g@example.com', h));
    expect(await l.allow(req('192.0.2.30', 'f@example.com', keyHash()))).toBe(false);
  });
}

describe('login limiter (memory)', () => {
  behaviour(() => ({ redis: '', prefix: () => 'm' }));

  it('lets a valid key on one device log in while a stale key on another keeps failing (through Authenticator)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-limits-'));
    const store = openSqliteStore(join(dir, 'k.db'), { touchIntervalMs: 20 });
    try {
      await store.ensureAccount('alice@example.com');
      const old = newKey({ name: 'phone', account: 'alice@example.com', scopes: ['imap'] });
      const current = newKey({ name: 'laptop', account: 'alice@example.com', scopes: ['imap'] });
      await store.createKey(old.record);
      await store.createKey(current.record);
      await store.revokeKey(old.record.id, new Date().toISOString());

      // Defaults: a stale phone retrying (three mechanisms per attempt) on the same home IP as the laptop.
      const auth = new Authenticator({ store, logger: silentLogger(), limiter: await make({}), failureDelayMs: 0 });
      const login = (key: string, ip: string) => auth.logIn({ protocol: 'imap', username: 'alice@example.com', key, ip });
      const phone = [];
      for (let i = 0; i < 40; i++) phone.push(await login(old.key, '198.51.100.20'));
      expect(phone.filter((r) => r.kind === 'refused' && r.reason === 'revoked')).toHaveLength(DEFAULTS.auth.accountFailures);
      expect(phone.at(-1)).toMatchObject({ kind: 'temporary', reason: 'rate_limited' });
      // The laptop, same account, same IP, valid key: still logs in.
      expect(await login(current.key, '198.51.100.20')).toMatchObject({ kind: 'loggedIn' });
      expect(await login(current.key, '203.0.113.40')).toMatchObject({ kind: 'loggedIn' });
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('derives fixed-size buckets', () => {
    expect(ipBucket('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(ipBucket('2001:db8:aa:bb:cc:dd:ee:ff')).toBe('2001:db8:aa:bb::/64');
    expect(accountKeyBucket('A@x'.repeat(3000), 'h')).toHaveLength(32);
    expect(accountKeyBucket(' Alice@Example.com', 'h')).toBe(accountKeyBucket('alice@example.com', 'h'));
  });
});

describe.runIf(redisAvailable())('login limiter (Redis)', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await server?.stop();
  });

  behaviour(() => ({ redis: server.url, prefix: () => `t${randomBytes(4).toString('hex')}` }));

  it('shares counts across two limiter instances (two Keygate instances)', async () => {
    const prefix = `shared${randomBytes(4).toString('hex')}`;
    const a = await make({ ipFailures: 4, accountFailures: 3 }, server.url, { keyPrefix: prefix });
    const b = await make({ ipFailures: 4, accountFailures: 3 }, server.url, { keyPrefix: prefix });
    const stale = keyHash();
    await a.recordFailure(req('192.0.2.50', 'h@example.com', stale));
    await b.recordFailure(req('192.0.2.50', 'h@example.com', stale));
    await a.recordFailure(req('192.0.2.51', 'h@example.com', stale));
    expect(await b.allow(req('192.0.2.52', 'h@example.com', stale))).toBe(false);
    expect(await a.allow(req('192.0.2.52', 'h@example.com', keyHash()))).toBe(true);
    await b.recordFailure(req('192.0.2.50', 'i@example.com', keyHash()));
    await a.recordFailure(req('192.0.2.50', 'j@example.com', keyHash()));
    expect(await a.allow(req('192.0.2.50', 'k@example.com', keyHash()))).toBe(false);
    expect(await b.allow(req('192.0.2.50', 'k@example.com', keyHash()))).toBe(false);
    // A success through one instance clears the (account, key) count for both.
    await a.recordSuccess!(req('192.0.2.52', 'h@example.com', stale));
    expect(await b.allow(req('192.0.2.52', 'h@example.com', stale))).toBe(true);
  });

  it('fails open, never throws, and warns when Redis goes away', async () => {
    const own = await startRedis();
    const { logger, lines } = captureLogger();
    const l = await make({ ipFailures: 1, accountFailures: 1 }, own.url, {}, logger);
    await l.recordFailure(req('192.0.2.60', 'l@example.com', keyHash()));
    expect(await l.allow(req('192.0.2.60', 'l@example.com', keyHash()))).toBe(false);
    await own.stop();
    await sleep(100);
    const started = Date.now();
    expect(await l.allow(req('192.0.2.60', 'l@example.com', keyHash()))).toBe(true);
    await expect(l.recordFailure(req('192.0.2.60', 'l@example.com', keyHash()))).resolves.toBeUndefined();
    await expect(l.recordSuccess!(req('192.0.2.60', 'l@example.com', keyHash()))).resolves.toBeUndefined();
    expect(Date.now() - started).toBeLessThan(1000);
    expect(lines.some((x) => x.level === 40 && String(x.msg).includes('fail open'))).toBe(true);
  });
});

describe('login limiter with Redis unreachable from the start', () => {
  it('starts anyway, fails open, and closes', async () => {
    // A port with nothing listening on it.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const { logger, lines } = captureLogger();
    const l = await make({ ipFailures: 1 }, `redis://127.0.0.1:${port}`, {}, logger);
    await l.recordFailure(req('192.0.2.70', 'm@example.com', keyHash()));
    expect(await l.allow(req('192.0.2.70', 'm@example.com', keyHash()))).toBe(true);
    expect(lines.some((x) => x.level === 40)).toBe(true);
  });
});
