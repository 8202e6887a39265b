import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Authenticator } from '../../src/auth/authenticate.js';
import { accountKeyBucket, createLoginLimiter, ipBucket, type LoginLimiterOptions, type LoginLimiterWithClose } from '../../src/auth/limits.js';
import type { LoginLimiter } from '../../src/auth/authenticate.js';
import { DEFAULTS, type Config } from '../../src/config.js';
import { generateKey, hashKey } from '../../src/keys/format.js';
import { newKey } from '../../src/keys/new-key.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { KeyStore } from '../../src/store/types.js';
import { countingStore } from '../helpers/counting-store.js';
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
type Req = ReturnType<typeof req>;

/** One failed login as the Authenticator makes it: reserve, then settle as a failure. */
async function fail(l: LoginLimiter, r: Req): Promise<void> {
  const res = await l.reserve(r);
  expect(res, 'the attempt should have been let through').not.toBeNull();
  await res!.settle('failure');
}

/** Whether an attempt would be let through now; the probe itself gives its points back. */
async function allowed(l: LoginLimiter, r: Req): Promise<boolean> {
  const res = await l.reserve(r);
  if (!res) return false;
  await res.settle('undecided');
  return true;
}

async function succeed(l: LoginLimiter, r: Req): Promise<void> {
  const res = await l.reserve(r);
  expect(res).not.toBeNull();
  await res!.settle('success');
}

/** The shared behaviour, run against the memory and the Redis backend. */
function behaviour(backend: () => { redis: string; prefix: () => string }) {
  const limiter = (auth: Limits, options: LoginLimiterOptions = {}) => make(auth, backend().redis, { keyPrefix: backend().prefix(), ...options });

  it('trips the IP limit after N failures, for any account, and only for that IP', async () => {
    const l = await limiter({ ipFailures: 4, accountFailures: 100 });
    for (let i = 0; i < 3; i++) await fail(l, req('192.0.2.1', `u${i}@example.com`, keyHash()));
    expect(await allowed(l, req('192.0.2.1', 'someone@example.com', keyHash()))).toBe(true);
    await fail(l, req('192.0.2.1', 'u3@example.com', keyHash()));
    expect(await allowed(l, req('192.0.2.1', 'someone@example.com', keyHash()))).toBe(false);
    expect(await allowed(l, req('::ffff:192.0.2.1', 'someone@example.com', keyHash()))).toBe(false);
    expect(await allowed(l, req('192.0.2.2', 'someone@example.com', keyHash()))).toBe(true);
  });

  it('trips (account, stale key) while the same account with a valid key is still allowed, from the same IP', async () => {
    const l = await limiter({ ipFailures: 100, accountFailures: 3 });
    const stale = keyHash();
    const valid = keyHash();
    for (let i = 0; i < 3; i++) await fail(l, req('198.51.100.5', 'alice@example.com', stale));
    expect(await allowed(l, req('198.51.100.5', 'alice@example.com', stale))).toBe(false);
    expect(await allowed(l, req('203.0.113.9', 'Alice@Example.com', stale))).toBe(false);
    expect(await allowed(l, req('198.51.100.5', 'alice@example.com', valid))).toBe(true);
    expect(await allowed(l, req('203.0.113.9', 'alice@example.com', valid))).toBe(true);
    expect(await allowed(l, req('198.51.100.5', 'bob@example.com', stale))).toBe(true);
  });

  it('resets the (account, key) count on a success, and a success takes nothing from the IP', async () => {
    const l = await limiter({ ipFailures: 3, accountFailures: 3 });
    const h = keyHash();
    for (let i = 0; i < 2; i++) await fail(l, req('192.0.2.7', 'c@example.com', h));
    await succeed(l, req('192.0.2.7', 'c@example.com', h));
    for (let i = 0; i < 5; i++) await succeed(l, req('192.0.2.7', 'd@example.com', keyHash()));
    for (let i = 0; i < 2; i++) await fail(l, req('192.0.2.8', 'c@example.com', h));
    expect(await allowed(l, req('192.0.2.9', 'c@example.com', h))).toBe(true);
    // IP 192.0.2.7: two failures, any number of successes: one more attempt is still allowed.
    expect(await allowed(l, req('192.0.2.7', 'e@example.com', keyHash()))).toBe(true);
  });

  it('forgets failures when the window ends', async () => {
    const l = await limiter({ ipFailures: 2, accountFailures: 2, failureWindow: 1000 });
    const h = keyHash();
    await fail(l, req('192.0.2.9', 'd@example.com', h));
    await fail(l, req('192.0.2.9', 'd@example.com', h));
    expect(await allowed(l, req('192.0.2.9', 'd@example.com', h))).toBe(false);
    await sleep(1300);
    expect(await allowed(l, req('192.0.2.9', 'd@example.com', h))).toBe(true);
  });

  it('counts an IPv6 client by its /64', async () => {
    const l = await limiter({ ipFailures: 2, accountFailures: 100 });
    await fail(l, req('2001:db8:1:2::10', 'e@example.com', keyHash()));
    await fail(l, req('2001:db8:1:2:ffff::99', 'e@example.com', keyHash()));
    expect(await allowed(l, req('2001:db8:1:2:abcd::1', 'x@example.com', keyHash()))).toBe(false);
    expect(await allowed(l, req('2001:db8:1:3::10', 'x@example.com', keyHash()))).toBe(true);
  });

  it('with dedupeMs, counts a repeated identical failure (a client retrying each mechanism) once, but not endlessly', async () => {
    const l = await limiter({ ipFailures: 3, accountFailures: 2 }, { dedupeMs: 5000 });
    const h = keyHash();
    for (let i = 0; i < 3; i++) await fail(l, req('192.0.2.30', 'f@example.com', h)); // one login, three mechanisms
    expect(await allowed(l, req('192.0.2.30', 'f@example.com', h))).toBe(true);
    await fail(l, req('192.0.2.30', 'f@example.com', keyHash())); // a different key is a new attempt
    await fail(l, req('192.0.2.30', 'g@example.com', h));
    expect(await allowed(l, req('192.0.2.30', 'f@example.com', keyHash()))).toBe(false);

    // Replaying one wrong key: a handful of repeats are free, then each counts again.
    const replay = await limiter({ ipFailures: 4, accountFailures: 100 }, { dedupeMs: 5000 });
    const same = req('192.0.2.31', 'h@example.com', keyHash());
    let through = 0;
    for (let i = 0; i < 20; i++) {
      const res = await replay.reserve(same);
      if (!res) break;
      through++;
      await res.settle('failure');
    }
    expect(through).toBe(1 + 5 + 3);
  });

  it('reserves before the check: of 150 attempts at once, only the limit’s worth get through', async () => {
    const l = await limiter({ ipFailures: 30, accountFailures: 100 });
    const reservations = await Promise.all(Array.from({ length: 150 }, () => l.reserve(req('192.0.2.40', 'i@example.com', keyHash()))));
    expect(reservations.filter((r) => r !== null)).toHaveLength(30);
    await Promise.all(reservations.map((r) => r?.settle('failure')));
    expect(await allowed(l, req('192.0.2.40', 'j@example.com', keyHash()))).toBe(false);
    // Refused attempts took nothing: the count is the 30 failures, not 150.
    const other = await limiter({ ipFailures: 30, accountFailures: 100, failureWindow: 1000 });
    const held = await Promise.all(Array.from({ length: 60 }, () => other.reserve(req('192.0.2.41', 'k@example.com', keyHash()))));
    expect(held.filter((r) => r !== null)).toHaveLength(30);
    await Promise.all(held.map((r) => r?.settle('undecided')));
    expect(await allowed(other, req('192.0.2.41', 'k@example.com', keyHash()))).toBe(true);
  });

  it('lets a known-good credential through an IP over its limit, without counting it; guesses stay refused', async () => {
    const l = await limiter({ ipFailures: 5, accountFailures: 3 });
    const good = req('198.51.100.60', 'nat@example.com', keyHash());
    await succeed(l, good);
    for (let i = 0; i < 5; i++) await fail(l, req('198.51.100.60', 'victim@example.com', keyHash()));
    expect(await allowed(l, req('198.51.100.60', 'victim@example.com', keyHash()))).toBe(false);
    for (let i = 0; i < 10; i++) await succeed(l, good);
    // The same key under another name is not the credential that logged in.
    expect(await allowed(l, { ...good, account: 'victim@example.com' })).toBe(false);
    // A known-good key that starts failing (revoked since) still meets its own limit.
    for (let i = 0; i < 3; i++) await fail(l, good);
    expect(await allowed(l, good)).toBe(false);
  });
}

/**
 * The limits as a client meets them, through the Authenticator and a real
 * SQLite store whose lookups are counted; run with each limiter backend.
 */
function throughAuthenticator(backend: () => { redis: string; prefix: () => string }) {
  let dir: string;
  let base: KeyStore;
  let store: KeyStore;
  let calls: Map<string, number>;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-limits-'));
    base = openSqliteStore(join(dir, 'k.db'), { touchIntervalMs: 20 });
    ({ store, calls } = countingStore(base));
    await base.ensureAccount('alice@example.com');
  });
  afterEach(async () => {
    await base.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** An Authenticator with the server's limiter settings (defaults, and its 30 s retry de-duplication). */
  async function authenticator(auth: Limits = {}): Promise<Authenticator> {
    const limiter = await make(auth, backend().redis, { keyPrefix: backend().prefix(), dedupeMs: 30_000 });
    return new Authenticator({ store, logger: silentLogger(), limiter, failureDelayMs: 0 });
  }
  /** One IMAP login through the Authenticator, as { ok, reason, temporary }. */
  const login = async (a: Authenticator, key: string, ip: string, username = 'alice@example.com'): Promise<{ ok: boolean; reason?: string; temporary: boolean }> => {
    const outcome = await a.logIn({ protocol: 'imap', username, key, ip });
    return outcome.kind === 'loggedIn' ? { ok: true, temporary: false } : { ok: false, reason: outcome.reason, temporary: outcome.kind === 'temporary' };
  };

  it('150 wrong keys at once from one IP: no more than auth.ipFailures reach the store', async () => {
    const a = await authenticator();
    const results = await Promise.all(Array.from({ length: 150 }, () => login(a, generateKey(), '192.0.2.80')));
    expect(calls.get('findByHash')).toBe(DEFAULTS.auth.ipFailures);
    expect(results.filter((r) => !r.ok && r.reason === 'unknown_key')).toHaveLength(DEFAULTS.auth.ipFailures);
    expect(results.filter((r) => !r.ok && r.reason === 'rate_limited' && r.temporary)).toHaveLength(150 - DEFAULTS.auth.ipFailures);
    // And the next attempt from that IP is refused without a lookup too.
    expect(await login(a, generateKey(), '192.0.2.80')).toMatchObject({ ok: false, reason: 'rate_limited' });
    expect(calls.get('findByHash')).toBe(DEFAULTS.auth.ipFailures);
  });

  it('a valid key used by many connections at once is not held back by its own logins', async () => {
    const a = await authenticator();
    const service = newKey({ name: 'pool', account: 'alice@example.com', scopes: ['imap'] });
    await base.createKey(service.record);
    // Up to the limit's worth of first logins at once; after one success the key is known good.
    const first = await Promise.all(Array.from({ length: DEFAULTS.auth.ipFailures }, () => login(a, service.key, '192.0.2.95')));
    expect(first.every((r) => r.ok)).toBe(true);
    for (let round = 0; round < 3; round++) {
      const results = await Promise.all(Array.from({ length: 100 }, () => login(a, service.key, '192.0.2.95')));
      expect(results.filter((r) => !r.ok)).toEqual([]);
    }
  });

  it('an attacker behind a shared address does not lock out valid keys that logged in before', async () => {
    const a = await authenticator();
    const phone = newKey({ name: 'phone', account: 'alice@example.com', scopes: ['imap'] });
    const laptop = newKey({ name: 'laptop', account: 'alice@example.com', scopes: ['imap'] });
    await base.createKey(phone.record);
    await base.createKey(laptop.record);
    // The phone logged in yesterday from home; the laptop from the office, behind the NAT.
    expect(await login(a, phone.key, '203.0.113.50')).toMatchObject({ ok: true });
    expect(await login(a, laptop.key, '198.51.100.99')).toMatchObject({ ok: true });
    // Someone else behind the same NAT guesses.
    for (let i = 0; i < 60; i++) await login(a, generateKey(), '198.51.100.99', `victim${i}@example.com`);
    expect(await login(a, generateKey(), '198.51.100.99')).toMatchObject({ ok: false, reason: 'rate_limited' });
    // Both valid keys still log in from there, again and again.
    for (let i = 0; i < 5; i++) {
      expect(await login(a, laptop.key, '198.51.100.99')).toMatchObject({ ok: true });
      expect(await login(a, phone.key, '198.51.100.99')).toMatchObject({ ok: true });
    }
    // The guessing stays stopped: known-good logins gave the attacker no room.
    expect(await login(a, generateKey(), '198.51.100.99')).toMatchObject({ ok: false, reason: 'rate_limited' });
    // A key that never logged in anywhere waits for the window to end like any unknown key (README, Limits).
    const fresh = newKey({ name: 'new phone', account: 'alice@example.com', scopes: ['imap'] });
    await base.createKey(fresh.record);
    expect(await login(a, fresh.key, '198.51.100.99')).toMatchObject({ ok: false, reason: 'rate_limited' });
  });

  it('malformed keys (bad checksum) count toward the IP limit; a client repeating one is counted once', async () => {
    const a = await authenticator();
    const limit = DEFAULTS.auth.ipFailures;
    const bad = (i: number): string => `kg_${String(i).padStart(49, 'A')}`;
    // One client retrying one mistyped key with three mechanisms, three times: one failure.
    for (let i = 0; i < 3; i++) expect(await login(a, bad(0), '192.0.2.90')).toMatchObject({ ok: false, reason: 'malformed' });
    const results = [];
    for (let i = 1; i < limit + 20; i++) results.push(await login(a, bad(i), '192.0.2.90'));
    expect(results.filter((r) => !r.ok && r.reason === 'malformed')).toHaveLength(limit - 1);
    expect(results.slice(limit - 1).every((r) => !r.ok && r.reason === 'rate_limited')).toBe(true);
    expect(calls.get('findByHash')).toBeUndefined();
  });
}

describe('login limiter (memory)', () => {
  behaviour(() => ({ redis: '', prefix: () => 'm' }));
  throughAuthenticator(() => ({ redis: '', prefix: () => 'm' }));

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
  throughAuthenticator(() => ({ redis: server.url, prefix: () => `t${randomBytes(4).toString('hex')}` }));

  it('shares counts across two limiter instances (two Keygate instances)', async () => {
    const prefix = `shared${randomBytes(4).toString('hex')}`;
    const a = await make({ ipFailures: 4, accountFailures: 3 }, server.url, { keyPrefix: prefix });
    const b = await make({ ipFailures: 4, accountFailures: 3 }, server.url, { keyPrefix: prefix });
    const stale = keyHash();
    await fail(a, req('192.0.2.50', 'h@example.com', stale));
    await fail(b, req('192.0.2.50', 'h@example.com', stale));
    await fail(a, req('192.0.2.51', 'h@example.com', stale));
    expect(await allowed(b, req('192.0.2.52', 'h@example.com', stale))).toBe(false);
    expect(await allowed(a, req('192.0.2.52', 'h@example.com', keyHash()))).toBe(true);
    await fail(b, req('192.0.2.50', 'i@example.com', keyHash()));
    await fail(a, req('192.0.2.50', 'j@example.com', keyHash()));
    expect(await allowed(a, req('192.0.2.50', 'k@example.com', keyHash()))).toBe(false);
    expect(await allowed(b, req('192.0.2.50', 'k@example.com', keyHash()))).toBe(false);
    // A known-good credential remembered by one instance passes the limited IP on the other.
    const good = keyHash();
    const first = await a.reserve(req('192.0.2.53', 'h@example.com', good));
    await first!.settle('success');
    expect(await allowed(b, req('192.0.2.50', 'h@example.com', good))).toBe(true);
  });

  it('fails open, never throws, and warns when Redis goes away', async () => {
    const own = await startRedis();
    const { logger, lines } = captureLogger();
    const l = await make({ ipFailures: 1, accountFailures: 1 }, own.url, {}, logger);
    await fail(l, req('192.0.2.60', 'l@example.com', keyHash()));
    expect(await allowed(l, req('192.0.2.60', 'l@example.com', keyHash()))).toBe(false);
    await own.stop();
    await sleep(100);
    const started = Date.now();
    expect(await allowed(l, req('192.0.2.60', 'l@example.com', keyHash()))).toBe(true);
    const res = await l.reserve(req('192.0.2.60', 'l@example.com', keyHash()));
    await expect(res!.settle('failure')).resolves.toBeUndefined();
    await expect(res!.settle('success')).resolves.toBeUndefined();
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
    await fail(l, req('192.0.2.70', 'm@example.com', keyHash()));
    expect(await allowed(l, req('192.0.2.70', 'm@example.com', keyHash()))).toBe(true);
    expect(lines.some((x) => x.level === 40)).toBe(true);
  });
});
