import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueKey } from '../../src/services/keys.js';
import { dovecotAvailable, startShippedDovecot, type RunningDovecot } from '../helpers/dovecot.js';
import { startKeygate, type SingleKeygate } from '../helpers/keygate.js';
import { LineClient } from '../helpers/line-client.js';
import { composeEnvironments } from './compose.js';

/**
 * docker-compose.yml's Keygate settings, run against a Dovecot started from
 * the shipped deploy/dovecot/ configuration: only what a compose network
 * gives (host names, ports, the store's location) is changed, so a key logs
 * in through Keygate to Dovecot exactly as the compose stack would — IMAP and
 * POP3 through the master user after STARTTLS, and SMTP delivered over LMTP.
 */
describe.skipIf(!dovecotAvailable())('docker-compose.yml wiring, against the shipped Dovecot configuration', () => {
  let dovecot: RunningDovecot;
  let server: SingleKeygate;
  const keys: Record<string, string> = {};
  const port = (name: string): number => server.port(name);

  beforeAll(async () => {
    dovecot = await startShippedDovecot();
    // The master password comes from .env, as in the compose stack: the one Dovecot was started with.
    const env = composeEnvironments({ KEYGATE_UPSTREAM_MASTER_PASSWORD: dovecot.master.password }).envs.keygate!;
    // The harness's own loopback listeners, certificate and SQLite store stand in for the compose network and volumes.
    const adapted: Record<string, string> = { ...env };
    delete adapted.KEYGATE_REDIS_URL; // the store is not what this test is about
    for (const [name, value] of Object.entries(env)) {
      if (/^KEYGATE_(HTTP|SMTP|IMAP|POP3)_HOST$/.test(name)) adapted[name] = '127.0.0.1';
      if (/^KEYGATE_(HTTP|SMTP|IMAP|POP3)_(SECURE_)?PORT$/.test(name)) adapted[name] = '0';
      if (/^KEYGATE_UPSTREAM_(IMAP|POP3|SMTP)_HOST$/.test(name)) {
        expect(value).toBe('dovecot');
        adapted[name] = dovecot.host;
      }
    }
    // Compose's Dovecot ports are the shipped configuration's (checked in deploy-files.test.ts); here, the private ones.
    adapted.KEYGATE_UPSTREAM_IMAP_PORT = String(dovecot.imapPort);
    adapted.KEYGATE_UPSTREAM_POP3_PORT = String(dovecot.pop3Port);
    adapted.KEYGATE_UPSTREAM_SMTP_PORT = String(dovecot.lmtpPort);
    server = await startKeygate({ env: adapted });
    for (const who of ['alice@example.com', 'bob@example.com']) keys[who] = (await issueKey(server.store, 'operator', { name: `${who} laptop`, account: who, scopes: ['app'] })).key;
  });
  afterAll(async () => {
    await server?.close();
    await dovecot?.stop();
  });

  const imap = (user: string): ImapFlow =>
    new ImapFlow({ host: '127.0.0.1', port: port('imap'), secure: false, tls: { rejectUnauthorized: false }, auth: { user, pass: keys[user]! }, logger: false });

  it('a key logs in through Keygate to Dovecot (master user, after STARTTLS) and opens the INBOX', async () => {
    const c = imap('alice@example.com');
    await c.connect();
    try {
      const box = await c.mailboxOpen('INBOX');
      expect(box.path).toBe('INBOX');
      expect((await c.list()).map((m) => m.path)).toEqual(expect.arrayContaining(['INBOX', 'Sent', 'Drafts', 'Trash', 'Junk']));
    } finally {
      await c.logout();
    }
    expect(dovecot.logTail(50)).toMatch(/imap-login: Info: Login: user=<alice@example\.com>, method=PLAIN, .*, TLS, /);
  });

  it('mail sent through Keygate SMTP is delivered over LMTP and read back over IMAP and POP3', async () => {
    const subject = `compose-${Date.now()}`;
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: port('smtp'), secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: 'alice@example.com', pass: keys['alice@example.com']! }, logger: false });
    try {
      const info = await t.sendMail({ from: 'alice@example.com', to: 'bob@example.com', subject, text: 'Through the compose wiring.' });
      expect(info.response).toMatch(/^250 /);
    } finally {
      t.close();
    }
    const c = imap('bob@example.com');
    await c.connect();
    try {
      await c.mailboxOpen('INBOX');
      expect(((await c.search({ subject }, { uid: true })) as number[]).length).toBe(1);
    } finally {
      await c.logout();
    }
    // POP3 on loopback: Keygate takes a password before TLS from there.
    const pop = await LineClient.connect(port('pop3'));
    try {
      expect(await pop.line()).toMatch(/^\+OK /);
      pop.socket.write(`USER bob@example.com\r\nPASS ${keys['bob@example.com']}\r\n`);
      expect(await pop.line()).toMatch(/^\+OK/);
      expect(await pop.line(5000)).toMatch(/^\+OK Logged in/);
      pop.socket.write('STAT\r\n');
      expect(await pop.line(5000)).toMatch(/^\+OK [1-9]\d* \d+/); // Dovecot's STAT of bob's mailbox, relayed
    } finally {
      pop.socket.destroy();
    }
  });

  it('no one logs in to this Dovecot directly: not a user with any password, not the master user without the password', async () => {
    // One connection per attempt, all at once: Dovecot delays every failed login (auth_failure_delay).
    const attempt = async (login: string): Promise<string> => {
      const c = await LineClient.connect(dovecot.imapPort);
      try {
        expect(await c.line()).toMatch(/^\* OK /);
        return await c.command('a', `LOGIN ${login}`, 15_000);
      } finally {
        c.destroy();
      }
    };
    const replies = await Promise.all([
      'alice@example.com anything',
      'alice@example.com ""',
      `alice@example.com*keygate wrong-${dovecot.master.password}`,
      `alice@example.com*keygate ""`,
      `keygate ${dovecot.master.password}`,
    ].map(attempt));
    for (const r of replies) expect(r).toMatch(/^a NO /);
  });
});
