import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRedisStore } from '../../src/store/redis.js';
import type { KeyStore } from '../../src/store/types.js';
import { createHarness, type Harness, type Keygate } from '../helpers/keygate.js';
import { LineClient, plain } from '../helpers/line-client.js';
import { redisAvailable, REDIS_SKIP_REASON, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const ACCOUNT = 'cy@example.test';
const OTHER = 'dee@example.test';
const haveRedis = redisAvailable();
if (!haveRedis) console.warn(REDIS_SKIP_REASON);
let redis: RedisServer | null = null;
beforeAll(async () => {
  if (haveRedis) redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

async function pop3Login(port: number, user: string, key: string): Promise<string> {
  const c = await LineClient.connect(port);
  try {
    await c.line();
    await c.send(`USER ${user}`);
    return await c.send(`PASS ${key}`);
  } finally {
    c.end();
  }
}

const stores: [string, () => Promise<KeyStore | undefined>][] = [
  ['sqlite', async () => undefined],
  ...(haveRedis ? [['redis', () => openRedisStore(redis!.url, { namespace: `h${randomBytes(4).toString('hex')}` })] as [string, () => Promise<KeyStore | undefined>]] : []),
];

describe.each(stores)('login history over real logins (%s)', (_kind, openStore) => {
  let h: Harness;
  let k: Keygate;
  let store: KeyStore | undefined;
  beforeAll(async () => {
    store = await openStore();
    h = await createHarness({ ...(store && { store }) });
    k = await h.start({ http: true, flags: { 'events.historyMax': 5, 'events.failureThreshold': 0 } });
  });
  afterAll(async () => {
    await h?.close();
    await store?.close();
  });

  const get = (key: string, path: string) => fetch(`http://127.0.0.1:${k.port('http')}${path}`, { headers: { authorization: `Bearer ${key}` } });

  it('is bounded: logins past the cap leave the newest; the own-account route and the policy', async () => {
    const { key, id } = await h.issue(ACCOUNT, ['pop3', 'api:read']);
    const admin = (await h.issue(null, ['*'])).key;
    const other = (await h.issue(OTHER, ['pop3', 'api:read'])).key;
    // Wrong in its last character, whatever that character is (a fixed 'x' was the key itself once in 62 runs).
    const wrong = `${key.slice(0, -1)}${key.endsWith('x') ? 'y' : 'x'}`;
    for (let i = 0; i < 8; i++) expect(await pop3Login(k.port('pop3'), ACCOUNT, i % 4 === 3 ? wrong : key)).toMatch(i % 4 === 3 ? /^-ERR/ : /^\+OK/);
    await k.history!.flush();

    const res = await get(admin, `/api/accounts/${ACCOUNT}/events?limit=100`);
    expect(res.status).toBe(200);
    const { events } = (await res.json()) as { events: { result: string; protocol: string; keyId: string | null }[] };
    // 8 POP3 logins, capped at 5: the newest five (the 8th failed, the 4th failure is gone).
    expect(events.map((e) => e.result)).toEqual(['failure', 'success', 'success', 'success', 'failure']);
    expect(events.every((e) => e.protocol === 'pop3')).toBe(true);

    // The account's own key reads its own history (its API call is an attempt too, recorded once a minute).
    const own = await get(key, '/api/smtp-credentials/events?result=success&limit=2');
    expect(own.status).toBe(200);
    const page = (await own.json()) as { events: { keyId: string }[]; next: string | null };
    expect(page.events).toHaveLength(2);
    expect(page.events.every((e) => e.keyId === id)).toBe(true);
    expect(page.next).not.toBeNull();
    const next = (await (await get(key, `/api/smtp-credentials/events?result=success&limit=2&cursor=${page.next}`)).json()) as { events: unknown[] };
    expect(next.events.length).toBeGreaterThan(0);

    // Another account's key may not read it; an unbound key needs api:read.
    expect((await get(other, `/api/accounts/${ACCOUNT}/events`)).status).toBe(403);
    expect((await get(other, '/api/smtp-credentials/events')).status).toBe(200);
    const metricsOnly = (await h.issue(null, ['metrics'])).key;
    expect((await get(metricsOnly, `/api/accounts/${ACCOUNT}/events`)).status).toBe(403);
    expect((await get(admin, `/api/accounts/${ACCOUNT}/events?cursor=abc`)).status).toBe(400);
    expect((await get(admin, `/api/accounts/${ACCOUNT}/events?limit=100000`)).status).toBe(400);
    // Nothing in the history is a key.
    expect(JSON.stringify(events)).not.toContain(key);
  });

  it('an attempt naming an unknown account is kept apart, with the name tried stripped of control characters', async () => {
    expect(await pop3Login(k.port('pop3'), 'nobody\u001b[31m@example.test', 'kg_nothing')).toMatch(/^-ERR/);
    await k.history!.flush();
    const page = await h.store.activity.listLogins({ account: null, limit: 10 }, { maxPerAccount: 5, retentionMs: 60_000 });
    expect(page.entries.find((e) => e.username !== undefined)).toMatchObject({ account: null, username: 'nobody[31m@example.test', result: 'failure' });
  });
});

describe('key.expiring and key.expired', () => {
  it('are raised once each, from the expiry scan', async () => {
    const receiver = new WebhookReceiver('expiry-secret-0123456789');
    await receiver.start();
    const h = await createHarness();
    try {
      const soon = await h.issue(ACCOUNT, ['smtp'], { expiresAt: new Date(Date.now() + 60 * 60_000).toISOString() });
      const later = await h.issue(ACCOUNT, ['smtp'], { expiresAt: new Date(Date.now() + 30 * 24 * 60 * 60_000).toISOString() });
      const brief = await h.issue(ACCOUNT, ['smtp'], { expiresAt: new Date(Date.now() + 400).toISOString() });
      const flags = {
        'webhooks.endpoints': JSON.stringify([{ url: receiver.url, secret: receiver.secret, events: ['key.expiring', 'key.expired'] }]),
        'webhooks.pollInterval': '50ms',
        'events.expiringBefore': '1d',
        'events.expiryScanInterval': '200ms',
      };
      let k = await h.start({ flags });
      await waitFor(() => receiver.events('key.expired').length === 1, 5000);
      // A second instance (a restart) scanning the same keys raises nothing again.
      await k.close();
      k = await h.start({ flags });
      await new Promise((r) => setTimeout(r, 600));
      expect(receiver.events('key.expiring').map((e) => e.keyId).sort()).toEqual([soon.id, brief.id].sort());
      expect(receiver.events('key.expired')).toMatchObject([{ keyId: brief.id, account: ACCOUNT }]);
      expect(receiver.received.some((r) => r.event.keyId === later.id)).toBe(false);
      expect(receiver.received.every((r) => r.signatureValid)).toBe(true);
    } finally {
      await h.close();
      await receiver.stop();
    }
  });
});
