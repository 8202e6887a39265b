import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setAccountUpstream } from '../../src/backends/accounts.js';
import { Authenticator } from '../../src/auth/authenticate.js';
import { loadConfig } from '../../src/config.js';
import { nginxAuthRoutes, pickNginxAddress } from '../../src/http/routes/nginx-auth.js';
import { newKey } from '../../src/keys/new-key.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { KeyStore } from '../../src/store/types.js';
import { memoryLogger } from './helpers.js';

/** GET /auth/nginx through app.inject on a tiny Fastify app holding just this plugin. */
describe('nginx auth_http endpoint', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-nginx-'));
  const log = memoryLogger('info');
  let store: KeyStore;
  let app: FastifyInstance;
  let aliceKey: string;
  let bobKey: string;
  let revokedKey: string;
  const FAILURE_DELAY_MS = 40;
  const config = loadConfig({
    env: {},
    flags: {
      secret: 'nginx-test-secret-0123456789',
      'nginx.authSecret': 'shared-nginx-secret',
      'upstream.imap.host': '127.0.0.1',
      'upstream.imap.port': 1143,
      'upstream.imap.tls': 'none',
      'upstream.pop3.host': 'mail.internal.test',
      'upstream.pop3.tls': 'none',
      'upstream.smtp.host': '127.0.0.1',
      'upstream.smtp.port': 10025,
      'upstream.smtp.login': 'none',
      'upstream.master.user': 'keygate',
      'upstream.master.password': 'master pw',
    },
  });

  beforeAll(async () => {
    store = openSqliteStore(join(dir, 'k.db'));
    for (const [who, scopes] of [['alice@example.com', ['imap', 'pop3', 'smtp']], ['bob@example.com', ['imap']]] as const) {
      const { key, record } = newKey({ name: who, account: who, scopes: [...scopes] });
      await store.ensureAccount(who);
      await store.createKey(record);
      if (who === 'alice@example.com') aliceKey = key;
      else bobKey = key;
    }
    const revoked = newKey({ name: 'old', account: 'alice@example.com', scopes: ['imap'] });
    await store.createKey(revoked.record);
    await store.revokeKey(revoked.record.id, new Date().toISOString());
    revokedKey = revoked.key;
    await setAccountUpstream(store, config, 'bob@example.com', { imap: { login: 'account' }, username: 'bob.upstream', password: 'bob-upstream-pw' });

    const authenticator = new Authenticator({ store, logger: log.logger, failureDelayMs: FAILURE_DELAY_MS });
    app = Fastify();
    await app.register(nginxAuthRoutes, { config, authenticator, resolveHost: async (h) => (h === 'mail.internal.test' ? '10.1.2.3' : h) });
  });
  afterAll(async () => {
    await app?.close();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const ask = (headers: Record<string, string>) =>
    app.inject({
      method: 'GET',
      url: '/auth/nginx',
      headers: { 'x-keygate-secret': 'shared-nginx-secret', 'auth-method': 'plain', 'auth-login-attempt': '1', 'client-ip': '192.0.2.44', ...headers },
    });

  it('logs an IMAP client in and rewrites the login to the master user', async () => {
    const res = await ask({ 'auth-user': 'Alice@Example.com', 'auth-pass': aliceKey, 'auth-protocol': 'imap' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['auth-status']).toBe('OK');
    expect(res.headers['auth-server']).toBe('127.0.0.1');
    expect(res.headers['auth-port']).toBe('1143');
    expect(res.headers['auth-user']).toBe('alice@example.com*keygate');
    expect(res.headers['auth-pass']).toBe('master pw');
    expect(log.text()).toMatch(/"protocol":"imap","ip":"192\.0\.2\.44","account":"alice@example\.com".*"result":"success"/);
  });

  it("hands out the account's own upstream credentials in account mode", async () => {
    const res = await ask({ 'auth-user': 'bob@example.com', 'auth-pass': bobKey, 'auth-protocol': 'imap' });
    expect(res.headers).toMatchObject({ 'auth-status': 'OK', 'auth-user': 'bob.upstream', 'auth-pass': 'bob-upstream-pw' });
  });

  it('resolves a host name to an address for POP3, and leaves the login alone for SMTP', async () => {
    const pop = await ask({ 'auth-user': 'alice@example.com', 'auth-pass': aliceKey, 'auth-protocol': 'pop3' });
    expect(pop.headers).toMatchObject({ 'auth-status': 'OK', 'auth-server': '10.1.2.3', 'auth-port': '110' });
    const smtp = await ask({ 'auth-user': 'alice@example.com', 'auth-pass': aliceKey, 'auth-protocol': 'smtp' });
    expect(smtp.headers).toMatchObject({ 'auth-status': 'OK', 'auth-server': '127.0.0.1', 'auth-port': '10025' });
    expect(smtp.headers['auth-pass']).toBeUndefined();
  });

  it('refuses a wrong, revoked, out-of-scope or percent-encoded garbage key the same way, with Auth-Wait, and audits each', async () => {
    const cases = [
      { 'auth-user': 'alice@example.com', 'auth-pass': 'wrong', 'auth-protocol': 'imap' },
      { 'auth-user': 'alice@example.com', 'auth-pass': revokedKey, 'auth-protocol': 'imap' },
      { 'auth-user': 'bob@example.com', 'auth-pass': bobKey, 'auth-protocol': 'pop3' }, // bob's key has no pop3 scope
      { 'auth-user': 'alice@example.com', 'auth-pass': `${aliceKey}%20x`, 'auth-protocol': 'imap' },
    ];
    for (const h of cases) {
      const started = Date.now();
      const res = await ask(h);
      // The same failure delay as the listeners: nginx's auth_http is no faster way to guess.
      expect(Date.now() - started).toBeGreaterThanOrEqual(FAILURE_DELAY_MS - 5);
      expect(res.statusCode).toBe(200);
      expect(res.headers['auth-status']).toBe('Invalid login or password');
      expect(res.headers['auth-wait']).toBe('3');
      expect(res.headers['auth-server']).toBeUndefined();
    }
    expect(log.text()).toMatch(/"reason":"revoked"/);
    expect(log.text()).toMatch(/"reason":"missing_scope"/);
    const smtp = await ask({ 'auth-user': 'alice@example.com', 'auth-pass': 'wrong', 'auth-protocol': 'smtp' });
    expect(smtp.headers['auth-error-code']).toBe('535 5.7.8');
  });

  it('decodes the percent-encoding nginx applies to Auth-User and Auth-Pass', async () => {
    const res = await ask({ 'auth-user': 'alice%40example.com', 'auth-pass': `%20${aliceKey}`, 'auth-protocol': 'imap' });
    expect(res.headers['auth-status']).toBe('OK');
  });

  it('refuses mechanisms that never carry the key (apop, cram-md5)', async () => {
    const res = await ask({ 'auth-user': 'alice@example.com', 'auth-pass': aliceKey, 'auth-protocol': 'pop3', 'auth-method': 'apop' });
    expect(res.headers['auth-status']).toBe('Invalid login or password');
  });

  it('stops sending Auth-Wait after many attempts so nginx closes the connection', async () => {
    const res = await ask({ 'auth-user': 'alice@example.com', 'auth-pass': 'wrong', 'auth-protocol': 'imap', 'auth-login-attempt': '12' });
    expect(res.headers['auth-status']).toBe('Invalid login or password');
    expect(res.headers['auth-wait']).toBeUndefined();
  });

  it('answers 403 without the shared secret, and never leaks the master password', async () => {
    const none = await app.inject({ method: 'GET', url: '/auth/nginx', headers: { 'auth-user': 'alice@example.com', 'auth-pass': aliceKey, 'auth-protocol': 'imap' } });
    expect(none.statusCode).toBe(403);
    expect(none.headers['auth-status']).toBeUndefined();
    const wrong = await ask({ 'x-keygate-secret': 'guess', 'auth-user': 'alice@example.com', 'auth-pass': aliceKey, 'auth-protocol': 'imap' });
    expect(wrong.statusCode).toBe(403);
    expect(wrong.body).not.toContain('master');
  });

  it('is disabled (403) when nginx.authSecret is empty', async () => {
    const off = Fastify();
    await off.register(nginxAuthRoutes, { config: loadConfig({ env: {}, flags: {} }), authenticator: new Authenticator({ store, logger: log.logger, failureDelayMs: 0 }) });
    const res = await off.inject({ method: 'GET', url: '/auth/nginx', headers: { 'x-keygate-secret': '' } });
    expect(res.statusCode).toBe(403);
    expect(res.json()).toMatchObject({ error: { code: 'forbidden' } });
    await off.close();
  });
});

describe('the upstream address given to nginx', () => {
  it('is the IPv4 address of a name that has both (nginx tries only one; Debian resolves localhost to ::1 first)', () => {
    expect(pickNginxAddress([{ address: '::1', family: 6 }, { address: '127.0.0.1', family: 4 }])).toBe('127.0.0.1');
    expect(pickNginxAddress([{ address: '2001:db8::25', family: 6 }])).toBe('2001:db8::25');
    expect(() => pickNginxAddress([])).toThrow(/no address/);
  });
});
