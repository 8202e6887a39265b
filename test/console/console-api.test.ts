import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Authenticator } from '../../src/auth/authenticate.js';
import { createLoginLimiter } from '../../src/auth/limits.js';
import { loadConfig } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { issueKey } from '../../src/services/keys.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from '../http/fixture.js';

const DELAY = { 'auth.failureDelay': '200ms' };
const REFUSED = 'Sign-in failed: check what you typed and try again';

/** The session cookie a sign-in set ("name=value"), and its attributes. */
function cookieOf(res: LightMyRequestResponse): { pair: string; attrs: string } {
  const raw = ([] as string[]).concat(res.headers['set-cookie'] ?? []).find((c) => /kg_session=/.test(c));
  if (!raw) throw new Error(`no session cookie (status ${res.statusCode}: ${res.body})`);
  return { pair: raw.split(';')[0]!, attrs: raw };
}

async function signInAsAdmin(app: FastifyInstance, key: string, headers: Record<string, string> = {}) {
  const res = await app.inject({ method: 'POST', url: '/api/console/sign-in/key', payload: { key }, headers });
  expect(res.statusCode, res.body).toBe(204);
  const { pair, attrs } = cookieOf(res);
  const session = (await app.inject({ method: 'GET', url: '/api/console/session', headers: { cookie: pair } })).json() as { csrfToken: string; kind: string };
  return { cookie: pair, attrs, csrf: session.csrfToken, session };
}

describe.each(storeKinds())('console sessions and sign-in (%s)', (kind) => {
  let f: Fixture;
  afterEach(async () => f?.close());
  afterAll(cleanupFixtures);

  it('an administrator key signs in; the cookie is HttpOnly, SameSite=Strict, not Secure over plain HTTP; the key is not in it', async () => {
    f = await createFixture(kind, { flags: DELAY });
    const s = await signInAsAdmin(f.app, f.adminKey);
    expect(s.attrs).toMatch(/HttpOnly/);
    expect(s.attrs).toMatch(/SameSite=Strict/);
    expect(s.attrs).toMatch(/Path=\//);
    expect(s.attrs).not.toMatch(/Secure/);
    expect(s.attrs).not.toContain(f.adminKey);
    expect(s.session.kind).toBe('admin');
    const tokens = await f.app.inject({ method: 'GET', url: '/api/tokens', headers: { cookie: s.cookie } });
    expect(tokens.statusCode).toBe(200);
    expect(f.logs.join('')).not.toContain(f.adminKey);
  });

  it('works on another instance, and signing out on one ends it on all', async () => {
    f = await createFixture(kind, { flags: DELAY });
    const other = await f.sibling();
    const s = await signInAsAdmin(f.app, f.adminKey);
    expect((await other.inject({ method: 'GET', url: '/api/accounts', headers: { cookie: s.cookie } })).statusCode).toBe(200);
    const out = await other.inject({ method: 'POST', url: '/api/console/sign-out', headers: { cookie: s.cookie } });
    expect(out.statusCode).toBe(204);
    expect(([] as string[]).concat(out.headers['set-cookie'] ?? []).join()).toMatch(/kg_session=;.*Expires=Thu, 01 Jan 1970/);
    const after = await f.app.inject({ method: 'GET', url: '/api/accounts', headers: { cookie: s.cookie } });
    expect(after.statusCode).toBe(401);
    expect(after.headers['www-authenticate']).toMatch(/^Bearer/);
  });

  it('state-changing requests need the CSRF token and our own origin', async () => {
    f = await createFixture(kind, { flags: DELAY });
    const s = await signInAsAdmin(f.app, f.adminKey);
    const post = (headers: Record<string, string>) =>
      f.app.inject({ method: 'POST', url: '/api/accounts', payload: { address: `x${Math.random().toString(36).slice(2)}@example.com` }, headers: { cookie: s.cookie, ...headers } });
    expect((await post({})).statusCode).toBe(403);
    expect((await post({ 'x-csrf-token': 'wrong' })).statusCode).toBe(403);
    expect((await post({ 'x-csrf-token': s.csrf, origin: 'https://evil.example' })).statusCode).toBe(403);
    expect((await post({ 'x-csrf-token': s.csrf, 'sec-fetch-site': 'cross-site' })).statusCode).toBe(403);
    expect((await post({ 'x-csrf-token': s.csrf, 'sec-fetch-site': 'same-origin', origin: 'http://localhost:80', host: 'localhost:80' })).statusCode).toBe(201);
    // Sign-in itself refuses another site's page too (login CSRF).
    const forged = await f.app.inject({ method: 'POST', url: '/api/console/sign-in/key', payload: { key: f.adminKey }, headers: { 'sec-fetch-site': 'cross-site' } });
    expect(forged.statusCode).toBe(403);
  });

  it('a one-time sign-in link signs the account holder in once; the session acts through the same policy', async () => {
    f = await createFixture(kind, { flags: DELAY });
    await f.issue({ account: 'dave@example.com', scopes: ['imap'] });
    const admin = await signInAsAdmin(f.app, f.adminKey);
    const made = await f.app.inject({ method: 'POST', url: '/api/accounts/dave@example.com/sign-in-links', headers: { cookie: admin.cookie, 'x-csrf-token': admin.csrf } });
    expect(made.statusCode).toBe(201);
    const token = (made.json() as { url: string }).url.split('#/link/')[1]!;
    const use = () => f.app.inject({ method: 'POST', url: '/api/console/sign-in/link', payload: { token } });
    const first = await use();
    expect(first.statusCode).toBe(204);
    const second = await use();
    expect(second.statusCode).toBe(401);
    expect((second.json() as { error: { message: string } }).error.message).toBe(REFUSED);

    const cookie = cookieOf(first).pair;
    const me = (await f.app.inject({ method: 'GET', url: '/api/console/session', headers: { cookie } })).json() as { kind: string; account: string; csrfToken: string };
    expect(me).toMatchObject({ kind: 'account', account: 'dave@example.com' });
    const h = { cookie, 'x-csrf-token': me.csrfToken };
    expect((await f.app.inject({ method: 'GET', url: '/api/smtp-credentials', headers: h })).statusCode).toBe(200);
    expect((await f.app.inject({ method: 'GET', url: '/api/tokens', headers: h })).statusCode).toBe(403);
    expect((await f.app.inject({ method: 'GET', url: '/api/console/overview', headers: h })).statusCode).toBe(403);
    expect((await f.app.inject({ method: 'GET', url: '/api/accounts/other@example.com/smtp-credentials', headers: h })).statusCode).toBe(403);
    // A key never grants more than it holds: a person's session gives mail and API scopes for their own account, not `*`.
    expect((await f.app.inject({ method: 'POST', url: '/api/smtp-credentials', headers: h, payload: { name: 'x', scopes: ['*'] } })).statusCode).toBe(403);
    const made2 = await f.app.inject({ method: 'POST', url: '/api/smtp-credentials', headers: h, payload: { name: 'Thunderbird', scopes: ['smtp', 'imap'] } });
    expect(made2.statusCode).toBe(201);

    // Disabling the account ends the session at its next request.
    await f.store.updateAccount('dave@example.com', { disabled: true });
    expect((await f.app.inject({ method: 'GET', url: '/api/smtp-credentials', headers: h })).statusCode).toBe(401);
  });

  it('revoking the administrator key ends the sessions it signed in', async () => {
    f = await createFixture(kind, { flags: DELAY });
    const second = await f.issue({ name: 'second admin', scopes: ['*'] });
    const s = await signInAsAdmin(f.app, second.key);
    expect((await f.app.inject({ method: 'GET', url: '/api/tokens', headers: { cookie: s.cookie } })).statusCode).toBe(200);
    await f.store.revokeKey(second.record.id, new Date().toISOString());
    expect((await f.app.inject({ method: 'GET', url: '/api/tokens', headers: { cookie: s.cookie } })).statusCode).toBe(401);
  });

  it('an idle session ends; a wrong or non-administrator key gets the one answer after the failure delay', async () => {
    // Windows wide enough that a loaded CI machine cannot stretch a 250 ms step past a 1.5 s idle timeout.
    f = await createFixture(kind, { flags: { ...DELAY, 'console.idleTimeout': '1500ms', 'console.absoluteTimeout': '1h' } });
    const s = await signInAsAdmin(f.app, f.adminKey);
    // Requests keep it alive past one idle period…
    const started = performance.now();
    while (performance.now() - started < 2000) {
      await sleep(250);
      expect((await f.app.inject({ method: 'GET', url: '/api/tokens', headers: { cookie: s.cookie } })).statusCode).toBe(200);
    }
    // …and it ends after one without.
    await sleep(2000);
    expect((await f.app.inject({ method: 'GET', url: '/api/tokens', headers: { cookie: s.cookie } })).statusCode).toBe(401);
    const bound = await f.issue({ account: 'erin@example.com', scopes: ['app'] });
    const answers: string[] = [];
    for (const key of ['kg_garbage', 'x'.repeat(1000), bound.key]) {
      const started = performance.now();
      const res = await f.app.inject({ method: 'POST', url: '/api/console/sign-in/key', payload: { key } });
      expect(performance.now() - started).toBeGreaterThanOrEqual(190);
      expect(res.statusCode).toBe(401);
      answers.push((res.json() as { error: { message: string } }).error.message);
    }
    expect(new Set(answers)).toEqual(new Set([REFUSED]));
    expect(f.logs.join('')).toMatch(/"protocol":"console-key".*"reason":"account_mismatch"/);
  });

  it('a session ends at its absolute timeout however busy it is', async () => {
    f = await createFixture(kind, { flags: { ...DELAY, 'console.idleTimeout': '1500ms', 'console.absoluteTimeout': '1500ms' } });
    const s = await signInAsAdmin(f.app, f.adminKey);
    const signedIn = performance.now();
    // Judged by when each request ran, not by how many: a loaded machine may stretch the steps.
    const early: number[] = [];
    const late: number[] = [];
    while (late.length < 2) {
      await sleep(200);
      const sent = performance.now() - signedIn;
      const code = (await f.app.inject({ method: 'GET', url: '/api/tokens', headers: { cookie: s.cookie } })).statusCode;
      const done = performance.now() - signedIn;
      if (done < 1200) early.push(code);
      else if (sent > 1600) late.push(code);
      expect(done).toBeLessThan(10_000);
    }
    expect(early.length).toBeGreaterThan(0);
    expect(new Set(early)).toEqual(new Set([200]));
    expect(late).toEqual([401, 401]);
  });

  it('password sign-in says when it is not available (no upstream IMAP server), the same for known and unknown addresses', async () => {
    f = await createFixture(kind, { flags: DELAY });
    await f.issue({ account: 'known@example.com', scopes: ['imap'] });
    for (const address of ['known@example.com', 'unknown@example.com']) {
      const avail = await f.app.inject({ method: 'POST', url: '/api/console/sign-in/password/available', payload: { address } });
      expect(avail.json()).toEqual({ available: false });
      const res = await f.app.inject({ method: 'POST', url: '/api/console/sign-in/password', payload: { address, password: 'pw' } });
      expect(res.statusCode).toBe(409);
      expect((res.json() as { error: { message: string } }).error.message).toMatch(/not available for this account/);
    }
  });
});

describe('console sessions over TLS and under the login limits', () => {
  it('behind a TLS proxy the cookie is __Host- prefixed and Secure', async () => {
    const f = await createFixture('sqlite', { flags: { ...DELAY, 'http.trustProxy': true } });
    try {
      const s = await signInAsAdmin(f.app, f.adminKey, { 'x-forwarded-proto': 'https' });
      expect(s.attrs).toMatch(/^__Host-kg_session=/);
      expect(s.attrs).toMatch(/; Secure/);
      expect(s.attrs).toMatch(/SameSite=Strict/);
    } finally {
      await f.close();
      await cleanupFixtures();
    }
  });

  it('failed sign-ins count toward the same limits as mail logins: past them even the right key is refused for a while', async () => {
    const config = loadConfig({ env: {}, flags: { ...DELAY, 'auth.ipFailures': 3, 'rateLimit.api.max': 1_000_000 } });
    const store = openSqliteStore(':memory:');
    const logger = createLogger('silent');
    const metrics = new Metrics(store, { processMetrics: false });
    const limiter = await createLoginLimiter(config, logger, { keyPrefix: 'console-test' });
    const authenticator = new Authenticator({ store, logger, metrics, limiter, failureDelayMs: config.auth.failureDelay });
    const app = await buildApp({ config, store, logger, metrics, authenticator });
    try {
      const admin = (await issueKey(store, 'operator', { name: 'admin', scopes: ['*'] })).key;
      for (let i = 0; i < 3; i++) expect((await app.inject({ method: 'POST', url: '/api/console/sign-in/key', payload: { key: `kg_wrong${i}` } })).statusCode).toBe(401);
      const blocked = await app.inject({ method: 'POST', url: '/api/console/sign-in/key', payload: { key: admin } });
      expect(blocked.statusCode).toBe(503);
      expect((blocked.json() as { error: { message: string } }).error.message).toMatch(/not possible right now/);
      const counted = (await metrics.authAttempts.get()).values.filter((v) => v.labels.protocol === 'console');
      expect(counted.find((v) => v.labels.result === 'failure')?.value).toBe(3);
    } finally {
      await app.close();
      await limiter.close();
      await store.close();
    }
  });
});
