import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

const ALICE = 'alice@example.com';
const form = (fields: Record<string, string>): string => new URLSearchParams(fields).toString();
const basic = (user: string, key: string): string => `Basic ${Buffer.from(`${user}:${key}`).toString('base64')}`;

afterAll(cleanupFixtures);

describe.each(storeKinds())('POST /oauth/introspect (RFC 7662) on %s', (kind) => {
  let f: Fixture;
  let introspector: string;
  let aliceKey: string;
  let aliceId: string;

  beforeAll(async () => {
    f = await createFixture(kind, { flags: { 'auth.failureDelay': '10ms' } });
    introspector = (await f.issue({ scopes: ['introspect'], account: null })).key;
    const alice = await f.issue({ scopes: ['imap', 'smtp'], account: ALICE, expiresAt: '2099-01-01T00:00:00.000Z' });
    aliceKey = alice.key;
    aliceId = alice.record.id;
  });
  afterAll(async () => {
    await f.close();
  });

  /** An introspection request as Dovecot's oauth2 passdb sends it: a form, the caller's key as the Basic password. */
  const introspect = (token: string, auth = basic('dovecot', introspector)) =>
    f.app.inject({
      method: 'POST',
      url: '/oauth/introspect',
      headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' },
      payload: form({ token, client_id: '', client_secret: '' }),
    });

  it('a live key: active, its scopes, account, id and times', async () => {
    const res = await introspect(aliceKey);
    expect(res.statusCode).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const body = res.json();
    expect(body).toEqual({ active: true, scope: 'smtp imap', username: ALICE, sub: ALICE, client_id: aliceId, token_type: 'Bearer', iat: expect.any(Number), exp: Date.parse('2099-01-01T00:00:00.000Z') / 1000 });
    expect(JSON.stringify(body)).not.toContain(aliceKey);
  });

  it('the caller may present its key as Bearer, and send JSON', async () => {
    const res = await f.app.inject({ method: 'POST', url: '/oauth/introspect', headers: { authorization: `Bearer ${introspector}` }, payload: { token: aliceKey } });
    expect(res.json()).toMatchObject({ active: true, username: ALICE });
  });

  it('{active:false} for anything else, whatever the reason', async () => {
    const revoked = await f.issue({ scopes: ['imap'], account: ALICE });
    await f.store.revokeKey(revoked.record.id, new Date().toISOString());
    const expired = await f.issue({ scopes: ['imap'], account: ALICE, expiresAt: new Date(Date.now() + 200).toISOString() });
    const restricted = await f.issue({ scopes: ['imap'], account: ALICE, allowedIps: ['192.0.2.0/24'] });
    const apiOnly = await f.issue({ scopes: ['api:read'], account: ALICE });
    const unbound = await f.issue({ scopes: ['internal'], account: null });
    const disabledAccount = await f.issue({ scopes: ['imap'], account: 'carol@example.com' });
    await f.store.updateAccount('carol@example.com', { disabled: true });
    await new Promise((r) => setTimeout(r, 250)); // the expiring key has expired
    const tokens = ['garbage', 'kg_' + 'x'.repeat(49), aliceKey.slice(0, -1) + (aliceKey.endsWith('a') ? 'b' : 'a'), revoked.key, expired.key, restricted.key, apiOnly.key, unbound.key, disabledAccount.key];
    for (const token of tokens) {
      const res = await introspect(token);
      expect(res.statusCode, token).toBe(200);
      expect(res.json(), token).toEqual({ active: false });
    }
  });

  it('the caller needs the introspect scope on an unbound key: 401 without a usable key, 403 without the scope', async () => {
    const mailKey = (await f.issue({ scopes: ['imap', 'smtp'], account: ALICE })).key;
    const boundIntrospector = (await f.issue({ scopes: ['introspect'], account: ALICE })).key;
    const metrics = (await f.issue({ scopes: ['metrics'], account: null })).key;
    expect((await introspect(aliceKey, '')).statusCode).toBe(401);
    expect((await introspect(aliceKey, basic('dovecot', 'kg_wrong'))).statusCode).toBe(401);
    expect((await introspect(aliceKey, basic('dovecot', mailKey))).statusCode).toBe(403);
    expect((await introspect(aliceKey, basic('dovecot', boundIntrospector))).statusCode).toBe(403);
    const missing = await introspect(aliceKey, basic('dovecot', metrics));
    expect(missing.statusCode).toBe(403);
    expect(missing.json().error.details).toEqual({ missingScope: 'introspect' });
    expect((await introspect(aliceKey, basic('dovecot', f.adminKey))).json()).toMatchObject({ active: true });
  });

  it('Basic counts only on this route: elsewhere it is no key', async () => {
    const res = await f.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: basic('x', f.adminKey) } });
    expect(res.statusCode).toBe(401);
  });

  it('400 without a token; the token is never echoed or logged', async () => {
    const res = await f.app.inject({ method: 'POST', url: '/oauth/introspect', headers: { authorization: `Bearer ${introspector}`, 'content-type': 'application/x-www-form-urlencoded' }, payload: form({ nottoken: aliceKey }) });
    expect(res.statusCode).toBe(400);
    expect(res.body).not.toContain(aliceKey);
    await introspect(aliceKey);
    expect(f.logs.join('\n')).not.toContain(aliceKey);
    expect(f.logs.join('\n')).not.toContain(introspector);
    expect(f.logs.some((l) => l.includes('"introspection":true') && l.includes(aliceId))).toBe(true);
  });

  it('a use through introspection is the key\'s last use', async () => {
    const fresh = await f.issue({ scopes: ['imap'], account: ALICE });
    await introspect(fresh.key);
    await f.store.flushTouches();
    expect((await f.store.getKey(fresh.record.id))?.lastUsedAt).not.toBeNull();
  });
});
