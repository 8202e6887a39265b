import { connect } from 'node:net';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueKey } from '../../src/services/keys.js';
import { dovecotAvailable, type RunningDovecot, startDovecot } from '../helpers/dovecot.js';
import { startKeygate, type SingleKeygate } from '../helpers/keygate.js';
import { makeMessage } from './helpers.js';

/**
 * The whole loop through Keygate's own listeners and the proxy backends, with
 * keys only: submit with Keygate SMTP → Dovecot LMTP → read back through
 * Keygate IMAP (imapflow: list, select, fetch, flag, append, IDLE) and POP3
 * (LIST, RETR, DELE); revoking the key ends the open IMAP session.
 */
describe.skipIf(!dovecotAvailable())('full loop: Keygate listeners → proxy backends → Dovecot', () => {
  let dc: RunningDovecot;
  let server: SingleKeygate;
  const keys: Record<string, { key: string; id: string }> = {};
  const port = (name: string): number => server.port(name);

  beforeAll(async () => {
    dc = await startDovecot();
    server = await startKeygate({ dovecot: dc });
    for (const who of ['alice@example.com', 'bob@example.com']) {
      const { key, record } = await issueKey(server.store, 'operator', { name: `${who} phone`, account: who, scopes: ['smtp', 'imap', 'pop3'] });
      keys[who] = { key, id: record.id };
    }
  });
  afterAll(async () => {
    await server?.close();
    await dc?.stop();
  });

  const submit = async (from: string, to: string, subject: string, body = 'Hello through Keygate.'): Promise<string> => {
    const t = nodemailer.createTransport({
      host: '127.0.0.1',
      port: port('smtp'),
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: from, pass: keys[from]!.key },
      logger: false,
    });
    try {
      const info = await t.sendMail({ from, to, subject, text: body });
      return info.response;
    } finally {
      t.close();
    }
  };

  const imap = (user: string, pass = keys[user]!.key): ImapFlow =>
    new ImapFlow({ host: '127.0.0.1', port: port('imap'), secure: false, tls: { rejectUnauthorized: false }, auth: { user, pass }, logger: false });

  it('delivers a message submitted to Keygate SMTP with a key, and reads it back through Keygate IMAP', async () => {
    const subject = `loop-${Date.now()}`;
    expect(await submit('alice@example.com', 'bob@example.com', subject)).toMatch(/^250 /);

    const c = imap('bob@example.com');
    await c.connect();
    try {
      // the upstream's post-login capabilities reached the client
      expect(c.capabilities.has('IDLE')).toBe(true);
      expect(c.capabilities.has('MOVE')).toBe(true);
      const list = await c.list();
      expect(list.map((m) => m.path)).toEqual(expect.arrayContaining(['INBOX', 'Sent', 'Trash']));
      const box = await c.mailboxOpen('INBOX');
      expect(box.exists).toBeGreaterThanOrEqual(1);
      const uids = (await c.search({ subject }, { uid: true })) as number[];
      expect(uids.length).toBe(1);
      const msg = await c.fetchOne(String(uids[0]), { envelope: true, source: true, flags: true }, { uid: true });
      expect(msg && msg.envelope?.subject).toBe(subject);
      expect(msg && msg.source?.toString()).toContain('Hello through Keygate.');
      await c.messageFlagsAdd(String(uids[0]), ['\\Flagged'], { uid: true });
      const flagged = await c.fetchOne(String(uids[0]), { flags: true }, { uid: true });
      expect(flagged && [...(flagged.flags ?? [])]).toContain('\\Flagged');
      const appended = await c.append('Sent', makeMessage('bob@example.com', 'alice@example.com', 'appended through keygate'), ['\\Seen']);
      expect(appended && appended.uid).toBeGreaterThan(0);
      const status = await c.status('Sent', { messages: true });
      expect(status && status.messages).toBe(1);
    } finally {
      await c.logout();
    }
  });

  it('IDLE through the pipe sees a new delivery', async () => {
    const c = imap('alice@example.com');
    await c.connect();
    try {
      await c.mailboxOpen('INBOX');
      const seen = new Promise<number>((resolve) => c.on('exists', (e: { count: number }) => resolve(e.count)));
      const idle = c.idle();
      await new Promise((r) => setTimeout(r, 200));
      await submit('bob@example.com', 'alice@example.com', `idle-${Date.now()}`);
      const count = await Promise.race([seen, new Promise<number>((_, rej) => setTimeout(() => rej(new Error('no EXISTS while idling')), 8000))]);
      expect(count).toBeGreaterThanOrEqual(1);
      void idle;
    } finally {
      await c.logout();
    }
  });

  it('reads and deletes through Keygate POP3 (LIST, RETR, DELE)', async () => {
    const subject = `pop-${Date.now()}`;
    await submit('bob@example.com', 'alice@example.com', subject);
    const sock = connect({ host: '127.0.0.1', port: port('pop3') });
    sock.setEncoding('latin1');
    let buf = '';
    sock.on('data', (d: string) => (buf += d));
    const reply = async (multi = false): Promise<string> => {
      const end = Date.now() + 5000;
      for (;;) {
        const done = multi ? /(^|\r\n)\.\r\n$/.test(buf) || buf.startsWith('-ERR') : buf.includes('\r\n');
        if (done) {
          const out = buf;
          buf = '';
          return out;
        }
        if (Date.now() > end) throw new Error(`POP3 timeout, got ${JSON.stringify(buf)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const cmd = (line: string, multi = false): Promise<string> => {
      sock.write(`${line}\r\n`);
      return reply(multi);
    };
    try {
      expect(await reply()).toMatch(/^\+OK/);
      expect(await cmd('USER alice@example.com')).toMatch(/^\+OK/);
      expect(await cmd(`PASS ${keys['alice@example.com']!.key}`)).toMatch(/^\+OK/);
      const list = await cmd('LIST', true);
      expect(list).toMatch(/^\+OK/);
      const n = list.split('\r\n').filter((l) => /^\d+ \d+$/.test(l)).length;
      expect(n).toBeGreaterThanOrEqual(1);
      let found = 0;
      for (let i = 1; i <= n && !found; i++) if ((await cmd(`RETR ${i}`, true)).includes(`Subject: ${subject}`)) found = i;
      expect(found).toBeGreaterThan(0);
      expect(await cmd(`DELE ${found}`)).toMatch(/^\+OK/);
      expect(await cmd('QUIT')).toMatch(/^\+OK/);
    } finally {
      sock.destroy();
    }
    // the deletion happened upstream
    const c = imap('alice@example.com');
    await c.connect();
    try {
      await c.mailboxOpen('INBOX');
      expect(((await c.search({ subject })) as number[]).length).toBe(0);
    } finally {
      await c.logout();
    }
  });

  it('carries an 8 MB message byte for byte both ways, to a client that reads slowly', async () => {
    const subject = `bulk-${Date.now()}`;
    const message = makeMessage('alice@example.com', 'alice@example.com', subject, 8 * 1024 * 1024);
    const c = imap('alice@example.com');
    await c.connect();
    let uid: number;
    try {
      const appended = await c.append('INBOX', message);
      uid = (appended as { uid: number }).uid;
    } finally {
      await c.logout();
    }
    // A raw client that stops reading for a moment after every chunk, so
    // Keygate's buffer towards it fills and the upstream must be held back.
    const sock = connect({ host: '127.0.0.1', port: port('imap') });
    const chunks: Buffer[] = [];
    let size = 0;
    let waiting: { marker: string; resolve: () => void } | null = null;
    let tail = '';
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      size += d.length;
      sock.pause();
      setTimeout(() => sock.resume(), 2);
      tail = (tail + d.toString('latin1', Math.max(0, d.length - 256))).slice(-512);
      if (waiting && tail.includes(waiting.marker)) waiting.resolve();
    });
    const until = (marker: string): Promise<void> =>
      new Promise((resolve) => {
        tail = '';
        waiting = { marker, resolve };
      });
    await until('* OK');
    sock.write(`a LOGIN alice@example.com ${keys['alice@example.com']!.key}\r\na SELECT INBOX\r\n`);
    await until('a OK [READ-WRITE]');
    chunks.length = 0;
    size = 0;
    sock.write(`b UID FETCH ${uid!} (BODY.PEEK[])\r\n`);
    await until('b OK');
    sock.destroy();
    const reply = Buffer.concat(chunks, size);
    const open = reply.indexOf(`{${message.length}}\r\n`);
    expect(open).toBeGreaterThan(0);
    const start = open + `{${message.length}}\r\n`.length;
    expect(reply.subarray(start, start + message.length).equals(message)).toBe(true);
    expect(reply.subarray(start + message.length).toString('latin1')).toMatch(/^\)\r\nb OK /);
  }, 60_000);

  it('a client vanishing mid-pipe (inside an APPEND literal) ends the upstream session too', async () => {
    // earlier tests' sessions finish closing first
    for (const end = Date.now() + 3000; server.sessions.count('imap') > 0 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
    const before = server.sessions.count('imap');
    const sock = connect({ host: '127.0.0.1', port: port('imap') });
    let buf = '';
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => (buf += d));
    const until = async (re: RegExp): Promise<void> => {
      const end = Date.now() + 5000;
      while (!re.test(buf)) {
        if (Date.now() > end) throw new Error(`timeout waiting for ${re}, got ${JSON.stringify(buf)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await until(/^\* OK/);
    sock.write(`a LOGIN alice@example.com ${keys['alice@example.com']!.key}\r\n`);
    await until(/a OK /);
    expect(server.sessions.count('imap')).toBe(before + 1);
    sock.write('b APPEND INBOX {100000}\r\n');
    await until(/\r\n\+ /);
    sock.write('half a message');
    sock.destroy();
    const end = Date.now() + 3000;
    while (server.sessions.count('imap') > before && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(server.sessions.count('imap')).toBe(before);
    await new Promise((r) => setTimeout(r, 200));
    expect(dc.logTail(40)).toMatch(/imap\(alice@example\.com\).*Disconnected: .*APPEND/);
    // and nothing half-appended reached the mailbox
    const c = imap('alice@example.com');
    await c.connect();
    try {
      await c.mailboxOpen('INBOX');
      expect(((await c.search({ body: 'half a message' })) as number[]).length).toBe(0);
    } finally {
      await c.logout();
    }
  });

  it('passes an upstream recipient rejection back to the SMTP client', async () => {
    await expect(submit('alice@example.com', 'nobody-such@example.com', 'nope')).rejects.toMatchObject({ responseCode: 550 });
  });

  it('revoking the key ends the open IMAP session within a second', async () => {
    const { key, record } = await issueKey(server.store, 'operator', { name: 'to revoke', account: 'bob@example.com', scopes: ['imap'] });
    const c = imap('bob@example.com', key);
    await c.connect();
    await c.mailboxOpen('INBOX');
    const closed = new Promise<number>((resolve) => c.once('close', () => resolve(Date.now())));
    const t0 = Date.now();
    await server.store.revokeKey(record.id, new Date().toISOString());
    const at = await Promise.race([closed, new Promise<number>((_, rej) => setTimeout(() => rej(new Error('session still open')), 3000))]);
    expect(at - t0).toBeLessThan(1000);
    // the revoked key cannot log in again
    await expect(imap('bob@example.com', key).connect()).rejects.toThrow();
  });
});
