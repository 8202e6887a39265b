import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey } from '../../src/keys/format.js';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

const MAX = 3;

function expect429(res: { statusCode: number; headers: Record<string, unknown>; json(): unknown }): void {
  expect(res.statusCode).toBe(429);
  const retryAfter = Number(res.headers['retry-after']);
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThan(0);
  expect(retryAfter).toBeLessThanOrEqual(60);
  expect(res.json()).toEqual({ error: { code: 'rate_limited', message: expect.any(String), details: { retryAfterSeconds: retryAfter } } });
}

describe.each(storeKinds())('rate limits on %s', (kind) => {
  let f: Fixture;
  const bound = async () => (await f.issue({ scopes: ['app'], account: 'alice@example.com' })).key;

  beforeAll(async () => {
    f = await createFixture(kind, { flags: { 'rateLimit.credentials.max': MAX, 'rateLimit.credentials.window': '1m', 'rateLimit.api.max': 5 } });
  });
  afterAll(() => f.close());

  it('credentials routes: per client IP, across keys → 429 with Retry-After and the JSON error shape', async () => {
    const ip = '198.51.100.1';
    for (let i = 0; i < MAX; i++) {
      const ok = await f.call(await bound(), { url: '/api/smtp-credentials', remoteAddress: ip });
      expect(ok.statusCode).toBe(200);
      expect(ok.headers['x-ratelimit-limit']).toBe(String(MAX));
    }
    expect429(await f.call(await bound(), { url: '/api/smtp-credentials', remoteAddress: ip }));
    // Another address is not affected.
    expect((await f.call(await bound(), { url: '/api/smtp-credentials', remoteAddress: '198.51.100.2' })).statusCode).toBe(200);
  });

  it('credentials routes: per key id, across addresses', async () => {
    const key = await bound();
    for (let i = 0; i < MAX; i++) {
      expect((await f.call(key, { url: '/api/smtp-credentials', remoteAddress: `203.0.113.${10 + i}` })).statusCode).toBe(200);
    }
    expect429(await f.call(key, { url: '/api/smtp-credentials', remoteAddress: '203.0.113.99' }));
    // Another key from a fresh address is not affected.
    expect((await f.call(await bound(), { url: '/api/smtp-credentials', remoteAddress: '203.0.113.100' })).statusCode).toBe(200);
  });

  it('refused keys count against the address too (key guessing is limited)', async () => {
    const ip = '198.51.100.50';
    for (let i = 0; i < MAX; i++) expect((await f.call(generateKey(), { url: '/api/smtp-credentials', remoteAddress: ip })).statusCode).toBe(401);
    expect429(await f.call(await bound(), { url: '/api/smtp-credentials', remoteAddress: ip }));
  });

  it('one budget for the whole group: every method, both URL forms', async () => {
    const ip = '198.51.100.60';
    const key = await bound();
    expect((await f.call(key, { url: '/api/smtp-credentials', remoteAddress: ip })).statusCode).toBe(200);
    expect((await f.call(key, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: ['smtp'] }, remoteAddress: ip })).statusCode).toBe(201);
    expect((await f.call(f.adminKey, { url: '/api/accounts/alice@example.com/smtp-credentials', remoteAddress: ip })).statusCode).toBe(200);
    expect429(await f.call(f.adminKey, { method: 'POST', url: '/api/accounts/alice@example.com/smtp-credentials/mobile', payload: { name: 'p', platform: 'ios', deviceId: 'd' }, remoteAddress: ip }));
    // Other routes from the same address have their own (wider) limits or none.
    expect((await f.call(f.adminKey, { url: '/api/accounts', remoteAddress: ip })).statusCode).toBe(200);
    expect((await f.call(null, { url: '/health', remoteAddress: ip })).statusCode).toBe(200);
    expect((await f.call(f.adminKey, { url: '/metrics', remoteAddress: ip })).statusCode).toBe(200);
  });

  it('other /api/ routes: rateLimit.api per address', async () => {
    const ip = '198.51.100.70';
    for (let i = 0; i < 5; i++) expect((await f.call(f.adminKey, { url: '/api/tokens', remoteAddress: ip })).statusCode).toBe(200);
    expect429(await f.call(f.adminKey, { url: '/api/tokens', remoteAddress: ip }));
    expect429(await f.call(f.adminKey, { url: '/api/accounts', remoteAddress: ip }));
  });

  it('feeds keygate_rate_limited_total{surface="http"}', async () => {
    const text = await (await f.call(f.adminKey, { url: '/metrics' })).body;
    const m = /^keygate_rate_limited_total\{surface="http"\} (\d+)$/m.exec(text);
    expect(Number(m?.[1])).toBeGreaterThanOrEqual(5);
  });

  if (kind === 'redis') {
    it('counters are shared by every instance on the same Redis', async () => {
      const other = await f.sibling();
      const ip = '198.51.100.80';
      const key = await bound();
      expect((await f.call(key, { url: '/api/smtp-credentials', remoteAddress: ip })).statusCode).toBe(200);
      expect((await other.inject({ url: '/api/smtp-credentials', remoteAddress: ip, headers: { authorization: `Bearer ${key}` } })).statusCode).toBe(200);
      expect((await f.call(key, { url: '/api/smtp-credentials', remoteAddress: ip })).statusCode).toBe(200);
      expect429(await other.inject({ url: '/api/smtp-credentials', remoteAddress: ip, headers: { authorization: `Bearer ${key}` } }));
    });
  }
});
