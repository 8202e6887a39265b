import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dovecotAvailable, startDovecot, type RunningDovecot } from '../helpers/dovecot.js';
import { startKeygate, type SingleKeygate } from '../helpers/keygate.js';
import { LineClient } from '../helpers/line-client.js';

/**
 * Dovecot validates Keygate keys itself: a real, private Dovecot with an
 * oauth2 passdb (`introspection_mode = post`) asks Keygate's
 * `POST /oauth/introspect`, authenticating with an `introspect` key in the
 * URL, about the bearer token each XOAUTH2 or OAUTHBEARER login carries.
 */
const ALICE = 'alice@example.com';
const b64 = (s: string): string => Buffer.from(s).toString('base64');

describe.skipIf(!dovecotAvailable())('Dovecot oauth2 passdb against Keygate', () => {
  let kg: SingleKeygate;
  let dovecot: RunningDovecot;
  let aliceKey: string;
  let aliceId: string;

  beforeAll(async () => {
    kg = await startKeygate({ http: true, protocols: [] });
    const introspector = (await kg.issue(null, ['introspect'])).key;
    ({ key: aliceKey, id: aliceId } = await kg.issue(ALICE, ['imap', 'smtp']));
    dovecot = await startDovecot({ oauth2: { introspectionUrl: `http://dovecot:${introspector}@127.0.0.1:${kg.port('http')}/oauth/introspect` } });
  });
  afterAll(async () => {
    await dovecot?.stop();
    await kg?.close();
  });

  it('imapflow with accessToken (OAUTHBEARER): Dovecot logs Alice in on her Keygate key', async () => {
    const client = new ImapFlow({ host: '127.0.0.1', port: dovecot.imapPort, secure: false, auth: { user: ALICE, accessToken: aliceKey }, logger: false });
    try {
      await client.connect();
      expect(client.authenticated).toBeTruthy();
      const inbox = await client.mailboxOpen('INBOX');
      expect(inbox.path).toBe('INBOX');
    } finally {
      await client.logout().catch(() => client.close());
    }
    expect(kg.logs.some((l) => l.introspection === true && l.keyId === aliceId && l.active === true)).toBe(true);
  });

  it('XOAUTH2 on the wire: OK for the key, NO after the error challenge for a revoked one', async () => {
    const c = await LineClient.connect(dovecot.imapPort);
    await c.line();
    expect(await c.command('a', `AUTHENTICATE XOAUTH2 ${b64(`user=${ALICE}\x01auth=Bearer ${aliceKey}\x01\x01`)}`)).toMatch(/^a OK /);
    c.destroy();

    const revoked = await kg.issue(ALICE, ['imap']);
    await kg.store.revokeKey(revoked.id, new Date().toISOString());
    const d = await LineClient.connect(dovecot.imapPort);
    await d.line();
    d.write(`b AUTHENTICATE XOAUTH2 ${b64(`user=${ALICE}\x01auth=Bearer ${revoked.key}\x01\x01`)}\r\n`);
    expect(await d.line()).toMatch(/^\+ /);
    expect(await d.send('')).toMatch(/^b NO /);
    d.destroy();
    expect(kg.logs.some((l) => l.introspection === true && l.keyId === revoked.id && l.active === false)).toBe(true);
  });

  it('imapflow with a key of another account is refused by Dovecot (the introspected username is not the login name)', async () => {
    const bob = (await kg.issue('bob@example.com', ['imap'])).key;
    const client = new ImapFlow({ host: '127.0.0.1', port: dovecot.imapPort, secure: false, auth: { user: ALICE, accessToken: bob }, logger: false });
    await expect(client.connect()).rejects.toMatchObject({ authenticationFailed: true });
    client.close();
  });
});
