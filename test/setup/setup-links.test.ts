import type { FastifyInstance } from 'fastify';
import { parse as parsePlist, type PlistValue } from 'plist';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisClient, type RedisClient } from '../../src/store/redis-connect.js';
import { buildMobileconfig, MOBILECONFIG_CONTENT_TYPE, type ProfileSigner } from '../../src/setup/mobileconfig.js';
import {
  MemorySetupLinkBackend,
  RedisSetupLinkBackend,
  SetupLinkCapacityError,
  SetupLinks,
  type PendingProfile,
  type SetupLinkBackend,
} from '../../src/setup/setup-links.js';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { captureLogger } from '../tls/helpers.js';
import { cmsVerify, HOSTNAME, INFO, opensslSigner, setupApp } from './helpers.js';

const KEY = 'kg_' + 'Z9y8X7w6'.repeat(5) + 'abc' + 'QwErTy';
const profile = (body = 'profile bytes'): PendingProfile => ({ body: Buffer.from(body), contentType: MOBILECONFIG_CONTENT_TYPE, filename: 'a@example.com.mobileconfig' });

/** A clock the test moves by hand. */
function clock(start = Date.parse('2030-01-01T00:00:00Z')) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe('SetupLinks (memory backend)', () => {
  it('serves a profile once; every later redeem is gone', async () => {
    const links = new SetupLinks(new MemorySetupLinkBackend(), { ttlMs: 60_000 });
    const { token, path, expiresAt } = await links.create(profile('hello'));
    expect(SetupLinks.isWellFormed(token)).toBe(true);
    expect(path).toBe(`/setup/${token}`);
    expect(Date.parse(expiresAt) - Date.now()).toBeGreaterThan(55_000);
    const first = await links.redeem(token);
    expect(first.status).toBe('ok');
    expect(first.status === 'ok' && first.profile.body.toString()).toBe('hello');
    expect(first.status === 'ok' && first.profile.filename).toBe('a@example.com.mobileconfig');
    expect((await links.redeem(token)).status).toBe('gone');
    expect((await links.redeem(token)).status).toBe('gone');
  });

  it('expires after the TTL, on both the backend and the sealed expiry', async () => {
    const c = clock();
    const backend = new MemorySetupLinkBackend({ now: c.now });
    const links = new SetupLinks(backend, { ttlMs: 5 * 60_000, now: c.now });
    const a = await links.create(profile());
    const b = await links.create(profile());
    c.advance(5 * 60_000 - 1);
    expect(await links.state(a.token)).toBe('live');
    expect((await links.redeem(a.token)).status).toBe('ok');
    c.advance(1);
    expect(await links.state(b.token)).toBe('gone');
    expect((await links.redeem(b.token)).status).toBe('gone');
  });

  it('state() does not use the link up; unknown and malformed tokens are told apart', async () => {
    const links = new SetupLinks(new MemorySetupLinkBackend());
    const { token } = await links.create(profile());
    expect(await links.state(token)).toBe('live');
    expect(await links.state(token)).toBe('live');
    expect((await links.redeem(token)).status).toBe('ok');
    expect(await links.state(token)).toBe('gone');
    const unknown = 'A'.repeat(43);
    expect((await links.redeem(unknown)).status).toBe('gone');
    for (const bad of ['', 'short', 'A'.repeat(44), `${'A'.repeat(42)}!`, '../../etc/passwd']) {
      expect((await links.redeem(bad)).status).toBe('malformed');
      expect(await links.state(bad)).toBe('malformed');
    }
  });

  it('of many concurrent redeems of one link, exactly one gets the profile', async () => {
    const links = new SetupLinks(new MemorySetupLinkBackend());
    const { token } = await links.create(profile());
    const results = await Promise.all(Array.from({ length: 20 }, () => links.redeem(token)));
    expect(results.filter((r) => r.status === 'ok')).toHaveLength(1);
  });

  it('stores only ciphertext: neither the key nor the token is in the backend', async () => {
    const stored: string[] = [];
    const inner = new MemorySetupLinkBackend();
    const spy: SetupLinkBackend = {
      kind: 'memory',
      put: (id, value, ttl) => (stored.push(id, value), inner.put(id, value, ttl)),
      take: (id) => inner.take(id),
      has: (id) => inner.has(id),
      close: () => inner.close(),
    };
    const links = new SetupLinks(spy);
    const { token } = await links.create(profile(`<string>${KEY}</string>`));
    const blob = stored.join('\n');
    expect(blob).not.toContain(KEY);
    expect(blob).not.toContain(Buffer.from(KEY).toString('base64').slice(0, 20));
    expect(blob).not.toContain(token);
    const got = await links.redeem(token);
    expect(got.status === 'ok' && got.profile.body.toString()).toContain(KEY);
  });

  it('refuses new links when the memory backend is full of live ones, and makes room as they expire', async () => {
    const c = clock();
    const links = new SetupLinks(new MemorySetupLinkBackend({ maxEntries: 3, now: c.now }), { ttlMs: 1000, now: c.now });
    for (let i = 0; i < 3; i++) await links.create(profile());
    await expect(links.create(profile())).rejects.toBeInstanceOf(SetupLinkCapacityError);
    c.advance(1000);
    await expect(links.create(profile())).resolves.toBeDefined();
  });
});

describe.skipIf(!redisAvailable())('SetupLinks (Redis backend)', () => {
  let server: RedisServer;
  let redis: RedisClient;
  beforeAll(async () => {
    server = await startRedis();
    redis = createRedisClient(server.url);
    if (redis.status !== 'ready') await new Promise((resolve) => redis.once('ready', resolve));
  });
  afterAll(async () => {
    await redis?.quit();
    await server?.stop();
  });

  it('serves once across instances sharing Redis, and never twice under concurrency', async () => {
    const a = new SetupLinks(new RedisSetupLinkBackend(redis, 'test:setup:'));
    const b = new SetupLinks(new RedisSetupLinkBackend(redis, 'test:setup:'));
    const { token } = await a.create(profile('shared'));
    expect(await b.state(token)).toBe('live');
    const results = await Promise.all([...Array.from({ length: 10 }, () => a.redeem(token)), ...Array.from({ length: 10 }, () => b.redeem(token))]);
    const ok = results.filter((r) => r.status === 'ok');
    expect(ok).toHaveLength(1);
    expect(ok[0]!.status === 'ok' && ok[0]!.profile.body.toString()).toBe('shared');
    expect(await a.state(token)).toBe('gone');
    expect(await redis.keys('test:setup:*')).toEqual([]);
  });

  it('lets Redis expire the entry (PX)', async () => {
    const links = new SetupLinks(new RedisSetupLinkBackend(redis, 'test:setup:'), { ttlMs: 150 });
    const { token } = await links.create(profile());
    const [key] = await redis.keys('test:setup:*');
    expect(Number(await redis.pttl(key!))).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(await links.state(token)).toBe('gone');
    expect((await links.redeem(token)).status).toBe('gone');
  });
});

describe('GET /setup/:token', () => {
  let signer: ProfileSigner;
  let links: SetupLinks;
  let app: FastifyInstance;
  const c = clock(Date.now());
  const log = captureLogger('info');

  beforeAll(async () => {
    signer = opensslSigner('rsa');
    links = new SetupLinks(new MemorySetupLinkBackend({ now: c.now }), { ttlMs: 10 * 60_000, now: c.now });
    app = await setupApp({ config: { public: INFO, hostname: HOSTNAME }, links, publicUrl: 'https://keygate.example.com' }, log.logger);
  });
  afterAll(() => app.close());
  afterEach(() => {
    log.lines.length = 0;
  });

  const newLink = async () => {
    const body = buildMobileconfig({ address: 'alice@example.com', apiKey: KEY, connectionInfo: INFO, signer });
    return (await links.create({ body, contentType: MOBILECONFIG_CONTENT_TYPE, filename: 'alice@example.com.mobileconfig' })).token;
  };

  it('first GET serves the signed profile; the second answers 410 with the JSON error shape', async () => {
    const token = await newLink();
    const first = await app.inject({ url: `/setup/${token}` });
    expect(first.statusCode).toBe(200);
    expect(first.headers['content-type']).toBe(MOBILECONFIG_CONTENT_TYPE);
    expect(first.headers['content-disposition']).toBe('attachment; filename="alice@example.com.mobileconfig"');
    expect(first.headers['cache-control']).toBe('no-store');
    const verified = await cmsVerify(first.rawPayload, signer.certPem);
    expect(verified.ok, verified.stderr).toBe(true);
    const mail = ((parsePlist(verified.content) as { PayloadContent: { [k: string]: PlistValue }[] }).PayloadContent)[0]!;
    expect(mail.IncomingPassword).toBe(KEY);

    const second = await app.inject({ url: `/setup/${token}` });
    expect(second.statusCode).toBe(410);
    expect(second.json()).toEqual({ error: { code: 'gone', message: expect.stringMatching(/used or has expired/) } });
  });

  it('an expired link answers 410', async () => {
    const token = await newLink();
    c.advance(10 * 60_000);
    const res = await app.inject({ url: `/setup/${token}` });
    expect(res.statusCode).toBe(410);
    expect(res.json().error.code).toBe('gone');
  });

  it('a token of the wrong shape answers 404; an unknown one 410', async () => {
    expect((await app.inject({ url: '/setup/nope' })).statusCode).toBe(404);
    expect((await app.inject({ url: `/setup/${'B'.repeat(43)}` })).statusCode).toBe(410);
  });

  it('HEAD (link previews) does not use the link up', async () => {
    const token = await newLink();
    const head = await app.inject({ method: 'HEAD', url: `/setup/${token}` });
    expect(head.statusCode).toBe(404);
    expect((await app.inject({ url: `/setup/${token}` })).statusCode).toBe(200);
  });

  it('QR routes draw the link without using it up, and answer 410 once it is used', async () => {
    const token = await newLink();
    const svg = await app.inject({ url: `/setup/${token}/qr.svg` });
    expect(svg.statusCode).toBe(200);
    expect(svg.headers['content-type']).toMatch(/^image\/svg\+xml/);
    expect(svg.body.trimStart()).toMatch(/^(<\?xml|<svg)/);
    const png = await app.inject({ url: `/setup/${token}/qr.png` });
    expect(png.statusCode).toBe(200);
    expect(png.headers['content-type']).toBe('image/png');
    expect(png.rawPayload.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
    expect((await app.inject({ url: `/setup/${token}` })).statusCode).toBe(200);
    expect((await app.inject({ url: `/setup/${token}/qr.svg` })).statusCode).toBe(410);
    expect((await app.inject({ url: `/setup/${token}/qr.png` })).statusCode).toBe(410);
  });

  it('never writes a setup token to the logs', async () => {
    const token = await newLink();
    await app.inject({ url: `/setup/${token}/qr.svg` });
    await app.inject({ url: `/setup/${token}` });
    await app.inject({ url: `/setup/${token}` });
    const text = JSON.stringify(log.lines);
    expect(log.lines.some((l) => l.msg === 'incoming request')).toBe(true);
    expect(text).toContain('/setup/[REDACTED]');
    expect(text).not.toContain(token);
  });
});
