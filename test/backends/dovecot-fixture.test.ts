import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dovecotAvailable, startDovecot, type RunningDovecot } from '../helpers/dovecot.js';

/** The fixture itself, checked with a real client before any backend test relies on it. */
describe.skipIf(!dovecotAvailable())('private Dovecot fixture', () => {
  let dc: RunningDovecot;
  beforeAll(async () => {
    dc = await startDovecot();
  });
  afterAll(async () => {
    await dc?.stop();
  });

  const client = (user: string, pass: string): ImapFlow =>
    new ImapFlow({ host: dc.host, port: dc.imapPort, secure: false, doSTARTTLS: false, auth: { user, pass }, logger: false });

  it('logs a passwd-file user in and opens INBOX', async () => {
    const c = client('alice@example.com', 'alice-upstream-pw');
    await c.connect();
    const box = await c.mailboxOpen('INBOX');
    expect(box.exists).toBe(0);
    await c.logout();
  });

  it('logs the master user in as a user (user*master)', async () => {
    const c = client(`bob@example.com*${dc.master.user}`, dc.master.password);
    await c.connect();
    const list = await c.list();
    expect(list.map((m) => m.path)).toContain('INBOX');
    await c.logout();
  });

  it('refuses a wrong password without a long delay', async () => {
    const c = client('alice@example.com', 'wrong');
    const t0 = Date.now();
    await expect(c.connect()).rejects.toThrow();
    expect(Date.now() - t0).toBeLessThan(1500);
  });
});
