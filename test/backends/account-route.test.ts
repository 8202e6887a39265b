import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueKey } from '../../src/services/keys.js';
import { DEFAULT_USERS, dovecotAvailable, type RunningDovecot, startDovecot } from '../helpers/dovecot.js';
import { startKeygate, type SingleKeygate } from '../helpers/keygate.js';

/**
 * An account's own route, set through the HTTP API, is what its sessions use:
 * Keygate account carol@example.com (no such Dovecot user) is routed with login
 * mode `account` to Dovecot user alice@example.com and her own password. The
 * configured master password is wrong on purpose, so the default route (master
 * login) cannot be what makes the login work; after DELETE it is again, and fails.
 * (No failed login before the good one: Dovecot's auth penalty would delay it past
 * upstream.loginTimeout.)
 */
describe.skipIf(!dovecotAvailable())('account route set over HTTP → Keygate IMAP → Dovecot', () => {
  let dc: RunningDovecot;
  let server: SingleKeygate;
  let adminKey: string;
  let carolKey: string;
  const alice = DEFAULT_USERS.find((u) => u.user === 'alice@example.com')!;

  beforeAll(async () => {
    dc = await startDovecot();
    server = await startKeygate({ dovecot: dc, http: true, flags: { 'upstream.master.password': 'not-the-master-password' } });
    adminKey = (await issueKey(server.store, 'operator', { name: 'admin', scopes: ['*'] })).key;
    carolKey = (await issueKey(server.store, 'operator', { name: 'carol laptop', account: 'carol@example.com', scopes: ['imap'] })).key;
  });
  afterAll(async () => {
    await server?.close();
    await dc?.stop();
  });

  const api = (method: string, body?: unknown): Promise<Response> => {
    const port = server.port('http');
    return fetch(`http://127.0.0.1:${port}/api/accounts/carol@example.com/upstream`, {
      method,
      headers: { authorization: `Bearer ${adminKey}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
  };

  const carol = (): ImapFlow =>
    new ImapFlow({
      host: '127.0.0.1',
      port: server.listeners.get('imap').address().port,
      secure: false,
      tls: { rejectUnauthorized: false },
      auth: { user: 'carol@example.com', pass: carolKey },
      logger: false,
    });

  it('after PUT …/upstream with login mode account, the key logs in and SELECT INBOX works as the upstream user', async () => {
    const res = await api('PUT', { imap: { login: 'account' }, username: alice.user, password: alice.password });
    expect(res.status).toBe(200);
    const body = await res.text();
    expect(JSON.parse(body)).toEqual({ account: 'carol@example.com', route: { imap: { login: 'account' }, username: alice.user, passwordSet: true } });
    expect(body).not.toContain(alice.password);

    const c = carol();
    await c.connect();
    try {
      const box = await c.mailboxOpen('INBOX');
      expect(box.path).toBe('INBOX');
      expect(box.readOnly).toBe(false);
    } finally {
      await c.logout();
    }
    await new Promise((r) => setTimeout(r, 100));
    // Dovecot saw alice log in with her own password: no master user in the login.
    const logins = dc.logTail(100).split('\n').filter((l) => /imap-login: Info: Login: /.test(l));
    expect(logins.at(-1)).toMatch(/user=<alice@example\.com>/);
    expect(logins.at(-1)).not.toMatch(/master/);
    expect(JSON.stringify(server.logs)).not.toContain(alice.password);
  });

  it('DELETE …/upstream puts the account back on the default route at once', async () => {
    expect((await api('DELETE')).status).toBe(204);
    await expect(carol().connect()).rejects.toThrow();
  });
});
