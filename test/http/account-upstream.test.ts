import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSealed } from '../../src/backends/secret.js';
import { cleanupFixtures, createFixture, errorCode, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

const SECRET = 'http-upstream-secret-0123456789';
const ACCOUNT_FIELDS = ['address', 'aliases', 'createdAt', 'disabled', 'displayName'];

describe.each(storeKinds())('/api/accounts/{account}/upstream on %s', (kind) => {
  let f: Fixture;
  /** Every upstream password sent in this file; none may come back in a response or a log line. */
  const passwords = [`Upstream-pw-${Math.random().toString(36).slice(2)}`, `Second pw ${Math.random().toString(36).slice(2)}`];
  const bodies: string[] = [];
  const call = async (...args: Parameters<Fixture['call']>) => {
    const res = await f.call(...args);
    bodies.push(res.body);
    return res;
  };
  const url = (account = 'ann@example.com') => `/api/accounts/${account}/upstream`;
  const stored = async () => (await f.store.getAccount('ann@example.com'))!.upstream as Record<string, unknown> | null;

  beforeAll(async () => {
    f = await createFixture(kind, { flags: { secret: SECRET }, logLevel: 'trace' });
    await f.store.ensureAccount('ann@example.com');
  });
  afterAll(() => f.close());

  it('GET: an account without a route of its own says route null', async () => {
    const res = await call(f.adminKey, { url: url('Ann@Example.com') });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ account: 'ann@example.com', route: null });
  });

  it('PUT stores the route with the password sealed; the reply and GET show passwordSet, never the password', async () => {
    const route = { imap: { host: 'imap.upstream.test', port: 993, tls: 'implicit', login: 'account' }, smtp: { login: 'none', trusted: true }, username: 'ann.upstream' };
    const res = await call(f.adminKey, { method: 'PUT', url: url(), payload: { ...route, password: passwords[0] } });
    expect(res.statusCode).toBe(200);
    const view = { account: 'ann@example.com', route: { ...route, passwordSet: true } };
    expect(res.json()).toEqual(view);
    const got = await call(f.adminKey, { url: url() });
    expect(got.json()).toEqual(view);
    expect(res.body + got.body).not.toMatch(/kgsec1|password"/);

    // At rest: a sealed value, neither the plain text nor its base64 in the record.
    const record = await stored();
    expect(isSealed(record!.password)).toBe(true);
    const raw = JSON.stringify(record);
    expect(raw).not.toContain(passwords[0]);
    expect(raw).not.toContain(Buffer.from(passwords[0]!).toString('base64url'));
    expect(raw).not.toContain(Buffer.from(passwords[0]!).toString('base64'));
  });

  it('PUT without a password keeps the stored one; a new password replaces it; null removes it', async () => {
    const sealed = (await stored())!.password;
    const kept = await call(f.adminKey, { method: 'PUT', url: url(), payload: { imap: { port: 1993 } } });
    expect(kept.statusCode).toBe(200);
    // The route is replaced as a whole (smtp and username are gone), the password kept as it was.
    expect(kept.json().route).toEqual({ imap: { port: 1993 }, username: null, passwordSet: true });
    expect((await stored())!.password).toBe(sealed);

    const replaced = await call(f.adminKey, { method: 'PUT', url: url(), payload: { imap: { login: 'account' }, password: passwords[1] } });
    expect(replaced.json().route.passwordSet).toBe(true);
    expect((await stored())!.password).not.toBe(sealed);

    const removed = await call(f.adminKey, { method: 'PUT', url: url(), payload: { imap: { login: 'master' }, password: null } });
    expect(removed.statusCode).toBe(200);
    expect(removed.json().route).toEqual({ imap: { login: 'master' }, username: null, passwordSet: false });
    expect(await stored()).not.toHaveProperty('password');
  });

  it.each([
    [{ imap: { tls: 'maybe' } }, 'body.imap.tls'],
    [{ imap: { port: 70000 } }, 'body.imap.port'],
    [{ pop3: { host: 'bad host' } }, 'body.pop3.host'],
    [{ imap: { login: 'lmtp' } }, 'body.imap.login'],
    [{ smtp: { hots: 'x' } }, 'body.smtp.hots'],
    [{ upstream: {} }, 'body.upstream'],
    [{ username: '' }, 'body.username'],
    [{ password: 'two\nlines' }, 'body.password'],
    [{ password: '' }, 'body.password'],
  ])('400 naming the field for %j, and nothing stored', async (payload, field) => {
    const before = await stored();
    const res = await call(f.adminKey, { method: 'PUT', url: url(), payload });
    expect(res.statusCode).toBe(400);
    expect(errorCode(res)).toBe('validation');
    expect(res.json().error.details.map((d: { field: string }) => d.field)).toContain(field);
    expect(await stored()).toEqual(before);
  });

  it('404 for an unknown account (or an alias) on GET, PUT and DELETE', async () => {
    await f.store.updateAccount('ann@example.com', { aliases: ['annie@example.com'] });
    for (const account of ['nobody@example.com', 'annie@example.com']) {
      expect((await call(f.adminKey, { url: url(account) })).statusCode).toBe(404);
      expect((await call(f.adminKey, { method: 'PUT', url: url(account), payload: { password: passwords[0] } })).statusCode).toBe(404);
      expect((await call(f.adminKey, { method: 'DELETE', url: url(account) })).statusCode).toBe(404);
    }
  });

  it('administrator keys only: 401 without a key, 403 for an account key or a read-only admin key writing', async () => {
    const own = (await f.issue({ scopes: ['app', 'api'], account: 'ann@example.com' })).key;
    const readOnly = (await f.issue({ scopes: ['api:read'] })).key;
    const noKey = await call(null, { url: url() });
    expect(noKey.statusCode).toBe(401);
    expect(noKey.headers['www-authenticate']).toMatch(/^Bearer/);
    for (const key of [own, readOnly]) {
      const put = await call(key, { method: 'PUT', url: url(), payload: { password: passwords[0] } });
      expect(put.statusCode).toBe(403);
      expect((await call(key, { method: 'DELETE', url: url() })).statusCode).toBe(403);
    }
    expect((await call(own, { url: url() })).statusCode).toBe(403);
    expect((await call(readOnly, { url: url() })).statusCode).toBe(200);
  });

  it('DELETE clears the route (204, idempotent); the account itself stays', async () => {
    await call(f.adminKey, { method: 'PUT', url: url(), payload: { imap: { login: 'account' }, password: passwords[0] } });
    const res = await call(f.adminKey, { method: 'DELETE', url: url() });
    expect(res.statusCode).toBe(204);
    expect(res.body).toBe('');
    expect(await stored()).toBeNull();
    expect((await call(f.adminKey, { url: url() })).json()).toEqual({ account: 'ann@example.com', route: null });
    expect((await call(f.adminKey, { method: 'DELETE', url: url() })).statusCode).toBe(204);
    expect((await call(f.adminKey, { url: '/api/accounts/ann@example.com' })).statusCode).toBe(200);
  });

  it('the account list and GET /api/accounts/{account} never carry the route', async () => {
    await call(f.adminKey, { method: 'PUT', url: url(), payload: { imap: { host: 'imap.upstream.test', login: 'account' }, username: 'ann.up', password: passwords[0] } });
    const list = await call(f.adminKey, { url: '/api/accounts' });
    const one = await call(f.adminKey, { url: '/api/accounts/ann@example.com' });
    expect(Object.keys(list.json().accounts.find((a: { address: string }) => a.address === 'ann@example.com')).sort()).toEqual(ACCOUNT_FIELDS);
    expect(Object.keys(one.json()).sort()).toEqual(ACCOUNT_FIELDS);
    expect(list.body + one.body).not.toMatch(/upstream|ann\.up|passwordSet/);
  });

  it('the OpenAPI document lists the three operations', async () => {
    const doc = (await f.call(null, { url: '/openapi.json' })).json();
    expect(Object.keys(doc.paths['/api/accounts/{account}/upstream']).sort()).toEqual(['delete', 'get', 'put']);
  });

  it('no response body and no log line ever held an upstream password', async () => {
    await new Promise((r) => setTimeout(r, 50));
    const logs = f.logs.join('');
    expect(logs).toContain('/upstream'); // the requests were logged (level trace)
    for (const p of passwords) {
      for (const b of bodies) expect(b).not.toContain(p);
      expect(logs).not.toContain(p);
    }
    expect(bodies.join('') + logs).not.toContain('kgsec1');
  });
});

describe('/api/accounts/{account}/upstream without KEYGATE_SECRET', () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await createFixture('sqlite');
    await f.store.ensureAccount('bob@example.com');
  });
  afterAll(() => f.close());

  it('409 naming the setting when a password is given; a route without one is fine', async () => {
    const res = await f.call(f.adminKey, { method: 'PUT', url: '/api/accounts/bob@example.com/upstream', payload: { imap: { login: 'account' }, password: 'bob-upstream-pw' } });
    expect(res.statusCode).toBe(409);
    expect(res.json().error).toMatchObject({ code: 'conflict', message: expect.stringMatching(/KEYGATE_SECRET/), details: { setting: 'secret' } });
    expect(res.body).not.toContain('bob-upstream-pw');
    expect((await f.store.getAccount('bob@example.com'))!.upstream).toBeNull();

    const ok = await f.call(f.adminKey, { method: 'PUT', url: '/api/accounts/bob@example.com/upstream', payload: { imap: { host: 'imap.other.test' } } });
    expect(ok.statusCode).toBe(200);
    expect(ok.json().route).toEqual({ imap: { host: 'imap.other.test' }, username: null, passwordSet: false });
  });
});
