import { createServer, type Server } from 'node:net';
import { Readable } from 'node:stream';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBackends } from '../../src/backends/index.js';
import { imapLogin } from '../../src/backends/imap.js';
import { ProxyBackend } from '../../src/backends/proxy.js';
import { Router } from '../../src/backends/routing.js';
import { sealSecret, secretBox } from '../../src/backends/secret.js';
import { BackendRejectedError, BackendUnavailableError, type ClosableBackends } from '../../src/backends/types.js';
import { dovecotAvailable, dovecotConfig, type RunningDovecot, startDovecot } from '../helpers/dovecot.js';
import { freePort } from '../helpers/free-port.js';
import { account, makeMessage, memoryLogger, readUntil, session, upstreamBytes } from './helpers.js';

/**
 * Each backend directly against a real private Dovecot (IMAP, POP3, LMTP):
 * no Keygate listener in between, the PipeSession socket is driven by hand.
 */
describe.skipIf(!dovecotAvailable())('proxy backends against Dovecot', () => {
  let dc: RunningDovecot;
  let backends: ClosableBackends;
  const log = memoryLogger();
  const alice = account('alice@example.com');
  const bob = account('bob@example.com');

  beforeAll(async () => {
    dc = await startDovecot();
    backends = createBackends(dovecotConfig(dc), null, log.logger);
  });
  afterAll(async () => {
    await backends?.close();
    await dc?.stop();
  });

  const imapClient = (user: string, pass: string): ImapFlow =>
    new ImapFlow({ host: dc.host, port: dc.imapPort, secure: false, doSTARTTLS: false, auth: { user, pass }, logger: false });

  describe('IMAP', () => {
    it('logs in as the master user and pipes SELECT INBOX through the PipeSession socket', async () => {
      const pipe = await backends.imap!.open(session(alice, 'imap'));
      try {
        expect(pipe.capabilities).toContain('IMAP4rev1');
        expect(pipe.capabilities).toContain('IDLE');
        expect(pipe.capabilities!.some((c) => /^(AUTH=|STARTTLS|LOGINDISABLED|SASL-IR)/i.test(c))).toBe(false);
        pipe.socket.write('a1 SELECT INBOX\r\n');
        const reply = await readUntil(upstreamBytes(pipe), (t) => /\r\na1 (OK|NO|BAD)[^\r]*\r\n$/.test(`\r\n${t}`));
        expect(reply).toMatch(/\* \d+ EXISTS/);
        expect(reply).toMatch(/a1 OK \[READ-WRITE\]/);
        pipe.socket.write('a2 LOGOUT\r\n');
        expect(await readUntil(upstreamBytes(pipe), (t) => t.includes('a2 OK'))).toContain('* BYE');
      } finally {
        pipe.close();
      }
    });

    it('reports the real client to a trusted upstream with ID before login', async () => {
      const trusted = createBackends(dovecotConfig(dc, { 'upstream.imap.trusted': true }), null, log.logger);
      const pipe = await trusted.imap!.open(session(bob, 'imap', '198.51.100.23'));
      pipe.close();
      await new Promise((r) => setTimeout(r, 200));
      expect(dc.logTail(50)).toMatch(/imap-login: Info: Login: user=<bob@example\.com>.*rip=198\.51\.100\.23/);
    });

    it('logs in with SASL PLAIN authzid (master style authzid)', async () => {
      const b = createBackends(dovecotConfig(dc, { 'upstream.imap.masterStyle': 'authzid' }), null, log.logger);
      const pipe = await b.imap!.open(session(alice, 'imap'));
      pipe.socket.write('n NAMESPACE\r\n');
      expect(await readUntil(upstreamBytes(pipe), (t) => t.includes('n OK'))).toContain('* NAMESPACE');
      pipe.close();
    });

    it('logs in with the account credentials stored sealed on the account (login mode account)', async () => {
      const config = dovecotConfig(dc);
      const sealed = sealSecret(secretBox(config.secret)!, 'bob-upstream-pw', 'bob@example.com');
      const acct = account('bob@example.com', { imap: { login: 'account' }, password: sealed });
      const pipe = await backends.imap!.open(session(acct, 'imap'));
      pipe.socket.write('x STATUS INBOX (MESSAGES)\r\n');
      expect(await readUntil(upstreamBytes(pipe), (t) => t.includes('x OK'))).toMatch(/\* STATUS INBOX \(MESSAGES \d+\)/);
      pipe.close();
    });

    it('fails quickly with BackendUnavailableError when the upstream port is closed', async () => {
      const port = await freePort();
      const b = createBackends(dovecotConfig(dc, { 'upstream.imap.port': port, 'upstream.pop3.port': port }), null, log.logger);
      const t0 = Date.now();
      await expect(b.imap!.open(session(alice, 'imap'))).rejects.toBeInstanceOf(BackendUnavailableError);
      await expect(b.pop3!.open(session(alice, 'pop3'))).rejects.toBeInstanceOf(BackendUnavailableError);
      expect(Date.now() - t0).toBeLessThan(1000);
    });

    it('gives up after upstream.loginTimeout on an upstream that never greets', async () => {
      const silent: Server = createServer(() => {});
      await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
      const port = (silent.address() as { port: number }).port;
      try {
        const b = createBackends(dovecotConfig(dc, { 'upstream.imap.port': port, 'upstream.loginTimeout': '300ms' }), null, log.logger);
        const t0 = Date.now();
        await expect(b.imap!.open(session(alice, 'imap'))).rejects.toBeInstanceOf(BackendUnavailableError);
        expect(Date.now() - t0).toBeGreaterThanOrEqual(280);
        expect(Date.now() - t0).toBeLessThan(1500);
      } finally {
        silent.close();
      }
    });

    it('survives the client vanishing mid-command: close() drops the upstream, the next session works', async () => {
      const pipe = await backends.imap!.open(session(alice, 'imap'));
      pipe.socket.write('a APPEND INBOX {100}\r\n'); // the literal never comes
      await readUntil(upstreamBytes(pipe), (t) => t.startsWith('+'));
      pipe.close();
      expect(pipe.socket.destroyed).toBe(true);
      const again = await backends.imap!.open(session(alice, 'imap'));
      again.socket.write('b NOOP\r\n');
      expect(await readUntil(upstreamBytes(again), (t) => t.includes('b OK'))).toContain('b OK');
      again.close();
    });

    it('keeps bytes the upstream sent right after the login reply for the pipe', async () => {
      // A fake upstream that pushes an untagged line in the same packet as the tagged OK.
      const fake = createServer((s) => {
        s.write('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fake ready\r\n');
        s.once('data', (d) => {
          const tag = d.toString().split(' ')[0];
          s.write(`${tag} OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n* 3 EXISTS\r\n`);
        });
      });
      await new Promise<void>((r) => fake.listen(0, '127.0.0.1', () => r()));
      const port = (fake.address() as { port: number }).port;
      try {
        const config = dovecotConfig(dc, { 'upstream.imap.port': port });
        const b = new ProxyBackend(imapLogin, new Router(config), { connectMs: 1000, loginMs: 1000 }, log.logger);
        const pipe = await b.open(session(alice, 'imap'));
        expect(pipe.capabilities).toEqual(['IMAP4rev1', 'IDLE', 'MOVE']);
        expect(await readUntil(upstreamBytes(pipe), (t) => t.includes('\r\n'))).toBe('* 3 EXISTS\r\n');
        pipe.close();
      } finally {
        fake.close();
      }
    });
  });

  describe('POP3', () => {
    it('logs in as the master user (USER user*master / PASS) and pipes STAT and LIST', async () => {
      const pipe = await backends.pop3!.open(session(alice, 'pop3'));
      pipe.socket.write('STAT\r\n');
      expect(await readUntil(upstreamBytes(pipe), (t) => t.endsWith('\r\n'))).toMatch(/^\+OK \d+ \d+\r\n$/);
      pipe.socket.write('QUIT\r\n');
      expect(await readUntil(upstreamBytes(pipe), (t) => t.endsWith('\r\n'))).toMatch(/^\+OK/);
      pipe.close();
    });

    it('logs in with AUTH PLAIN and an authzid, reporting the client with XCLIENT to a trusted upstream', async () => {
      const b = createBackends(dovecotConfig(dc, { 'upstream.pop3.masterStyle': 'authzid', 'upstream.pop3.trusted': true }), null, log.logger);
      const pipe = await b.pop3!.open(session(bob, 'pop3', '198.51.100.77'));
      pipe.socket.write('NOOP\r\n');
      expect(await readUntil(upstreamBytes(pipe), (t) => t.endsWith('\r\n'))).toMatch(/^\+OK/);
      pipe.close();
      await new Promise((r) => setTimeout(r, 200));
      expect(dc.logTail(50)).toMatch(/pop3-login: Info: Login: user=<bob@example\.com>.*rip=198\.51\.100\.77/);
    });

  });

  // Dovecot delays every login from an address after a failed one (auth penalty, up to 15 s),
  // so refusals get their own instance and cannot slow the tests above.
  describe('upstream refusing the login', () => {
    let refusing: RunningDovecot;
    beforeAll(async () => {
      refusing = await startDovecot();
    });
    afterAll(async () => {
      await refusing?.stop();
    });

    it('IMAP: BackendUnavailableError when the upstream refuses the master login, and no password in the log', async () => {
      const b = createBackends(dovecotConfig(refusing, { 'upstream.master.password': 'not-the-master-pw' }), null, log.logger);
      const t0 = Date.now();
      await expect(b.imap!.open(session(alice, 'imap'))).rejects.toBeInstanceOf(BackendUnavailableError);
      expect(Date.now() - t0).toBeLessThan(2000);
      await new Promise((r) => setTimeout(r, 20));
      expect(log.text()).toMatch(/upstream refused the login of alice@example.com/);
      expect(log.text()).not.toContain('not-the-master-pw');
      expect(log.text()).not.toContain(refusing.master.password);
    });

    it('POP3: BackendUnavailableError when the upstream refuses the login', async () => {
      const b = createBackends(dovecotConfig(refusing, { 'upstream.master.password': 'nope-nope', 'upstream.loginTimeout': '1s' }), null, log.logger);
      await expect(b.pop3!.open(session(alice, 'pop3'))).rejects.toBeInstanceOf(BackendUnavailableError);
    });
  });

  describe('SMTP (LMTP to Dovecot)', () => {
    it('delivers a message over LMTP, envelope preserved, then it can be read back over IMAP', async () => {
      const subject = `lmtp-${Date.now()}`;
      const text = await (await backends.smtp!.open(session(alice, 'smtp'))).send({ from: 'alice@example.com', to: ['bob@example.com'] }, Readable.from([makeMessage('alice@example.com', 'bob@example.com', subject)]));
      expect(text).toMatch(/^2\.0\.0/);
      const c = imapClient('bob@example.com', 'bob-upstream-pw');
      await c.connect();
      const lock = await c.getMailboxLock('INBOX');
      try {
        const found = await c.search({ subject });
        expect(found).not.toBe(false);
        expect((found as number[]).length).toBe(1);
        const msg = await c.fetchOne(String((found as number[])[0]), { envelope: true, headers: ['delivered-to', 'return-path'] }, {});
        expect(msg && msg.headers?.toString()).toMatch(/Return-Path: <alice@example\.com>/i);
      } finally {
        lock.release();
        await c.logout();
      }
    });

    it('passes an upstream recipient rejection back as BackendRejectedError with its code and text', async () => {
      const err = await (await backends.smtp!.open(session(alice, 'smtp')))
        .send({ from: 'alice@example.com', to: ['nobody-here@example.com'] }, Readable.from([makeMessage('alice@example.com', 'nobody-here@example.com', 'x')]))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackendRejectedError);
      expect((err as BackendRejectedError).code).toBe(550);
      expect((err as BackendRejectedError).response).toMatch(/^5\.1\.1 .*nobody-here@example\.com/);
    });

    it('refuses the whole message when some recipients are rejected, naming them', async () => {
      const err = await (await backends.smtp!.open(session(alice, 'smtp')))
        .send({ from: 'alice@example.com', to: ['bob@example.com', 'ghost@example.com'] }, Readable.from([makeMessage('alice@example.com', 'bob@example.com', 'partial')]))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackendRejectedError);
      expect((err as BackendRejectedError).response).toContain('not delivered to ghost@example.com');
    });

    it('relays a 25 MB message', async () => {
      const subject = `big-${Date.now()}`;
      const body = makeMessage('alice@example.com', 'alice@example.com', subject, 25 * 1024 * 1024);
      // A stream in 64 KB chunks, as the listener hands it over.
      const chunks = function* () {
        for (let i = 0; i < body.length; i += 65536) yield body.subarray(i, i + 65536);
      };
      await (await backends.smtp!.open(session(alice, 'smtp'))).send({ from: 'alice@example.com', to: ['alice@example.com'] }, Readable.from(chunks()));
      const c = imapClient('alice@example.com', 'alice-upstream-pw');
      await c.connect();
      const lock = await c.getMailboxLock('INBOX');
      try {
        const found = (await c.search({ subject })) as number[];
        expect(found.length).toBe(1);
        const msg = await c.fetchOne(String(found[0]), { size: true }, {});
        expect(msg && msg.size).toBeGreaterThan(25 * 1024 * 1024);
      } finally {
        lock.release();
        await c.logout();
      }
    }, 60_000);

    it('gives BackendUnavailableError quickly when the upstream is down, and drains the message', async () => {
      const port = await freePort();
      const b = createBackends(dovecotConfig(dc, { 'upstream.smtp.port': port }), null, log.logger);
      const msg = Readable.from([makeMessage('alice@example.com', 'bob@example.com', 'down')]);
      const t0 = Date.now();
      await expect((await b.smtp!.open(session(alice, 'smtp'))).send({ from: 'alice@example.com', to: ['bob@example.com'] }, msg)).rejects.toBeInstanceOf(BackendUnavailableError);
      expect(Date.now() - t0).toBeLessThan(1500);
      await new Promise((r) => setTimeout(r, 20));
      expect(msg.readableEnded).toBe(true);
      await b.close();
    });
  });
});
