import { Readable } from 'node:stream';
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerSession } from 'smtp-server';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Router } from '../../src/backends/routing.js';
import { sealSecret, secretBox } from '../../src/backends/secret.js';
import { SmtpProxyBackend } from '../../src/backends/smtp.js';
import { BackendRejectedError, BackendUnavailableError, type SessionContext, type SmtpEnvelope } from '../../src/backends/types.js';
import { loadConfig, type Config } from '../../src/config.js';
import { freePort } from '../helpers/free-port.js';
import { account, makeMessage, memoryLogger, session } from './helpers.js';

interface Received {
  auth: SMTPServerAuthentication[];
  xclient: Record<string, unknown>[];
  messages: { from: string; to: string[]; body: string; remote: string }[];
  connections: number;
}

/**
 * The SMTP backend against an smtp-server upstream (submission-like, with
 * AUTH and Postfix XCLIENT), to see exactly what Keygate sends: the master
 * login forms, the account login, XCLIENT, pooling and each refusal path.
 */
describe('SMTP backend relaying to an SMTP upstream', () => {
  let server: SMTPServer;
  let port: number;
  const got: Received = { auth: [], xclient: [], messages: [], connections: 0 };
  const log = memoryLogger();

  beforeAll(async () => {
    port = await freePort();
    server = new SMTPServer({
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true,
      allowInsecureAuth: true,
      disabledCommands: ['STARTTLS'],
      useXClient: true,
      disableReverseLookup: true,
      logger: false,
      onConnect(_s, cb) {
        got.connections++;
        cb();
      },
      onAuth(auth, _s, cb) {
        if ((auth.method as string) === 'XCLIENT') return cb(null, { user: auth.username }); // XCLIENT LOGIN= is trusted, as in Postfix
        got.auth.push(auth);
        if (auth.password === 'master-pw' || auth.password === 'alice-real-pw') return cb(null, { user: auth.username });
        return cb(Object.assign(new Error('5.7.8 Authentication credentials invalid'), { responseCode: 535 }));
      },
      onRcptTo(addr, _s, cb) {
        if (addr.address.startsWith('reject')) return cb(Object.assign(new Error('5.1.1 <' + addr.address + '>: Recipient address rejected'), { responseCode: 550 }));
        if (addr.address.startsWith('later')) return cb(Object.assign(new Error('4.2.0 <' + addr.address + '>: Try again later'), { responseCode: 451 }));
        cb();
      },
      onData(stream, s: SMTPServerSession, cb) {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          const body = Buffer.concat(chunks).toString();
          if (body.includes('DROP-CONNECTION')) {
            // The whole message arrived, but the upstream goes away before it answers.
            for (const conn of (server as unknown as { connections: Set<{ _socket: { destroy(): void } }> }).connections) conn._socket.destroy();
            return;
          }
          if (s.xClient?.size) got.xclient.push(Object.fromEntries(s.xClient));
          if (body.includes('REFUSE-CONTENT')) return cb(Object.assign(new Error('5.7.1 Message content rejected'), { responseCode: 554 }));
          got.messages.push({ from: (s.envelope.mailFrom as { address: string }).address, to: s.envelope.rcptTo.map((r) => r.address), body, remote: s.remoteAddress });
          cb(null, '2.0.0 Ok: queued as TEST1');
        });
      },
    });
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
  });
  beforeEach(() => {
    got.auth.length = 0;
    got.xclient.length = 0;
    got.messages.length = 0;
    got.connections = 0;
  });

  const config = (flags: Record<string, unknown> = {}): Config =>
    loadConfig({
      env: {},
      flags: {
        secret: 'relay-test-secret-0123456789',
        'upstream.smtp.host': '127.0.0.1',
        'upstream.smtp.port': port,
        'upstream.smtp.tls': 'none',
        'upstream.master.user': 'keygate',
        'upstream.master.password': 'master-pw',
        'upstream.connectTimeout': '1s',
        'upstream.loginTimeout': '2s',
        ...flags,
      },
    });
  const backend = (c: Config): SmtpProxyBackend =>
    new SmtpProxyBackend(new Router(c), { hostname: 'keygate.test', connectTimeoutMs: 1000, loginTimeoutMs: 2000, socketTimeoutMs: 5000, maxConnections: 2 }, log.logger);
  /** One message through a session's relay, as the SMTP listener sends it. */
  const send = async (b: SmtpProxyBackend, ctx: SessionContext, env: SmtpEnvelope, message: Readable): Promise<string> => (await b.open(ctx)).send(env, message);
  const alice = account('alice@example.com');
  const msg = (text = 'hello'): Readable => Readable.from([makeMessage('alice@example.com', 'bob@example.net', text)]);
  const envelope = { from: 'alice@example.com', to: ['bob@example.net', 'carol@example.org'] };

  it('logs in as the master user in the separator style and keeps the envelope', async () => {
    const b = backend(config());
    try {
      expect(await send(b, session(alice, 'smtp'), envelope, msg('sep'))).toBe('2.0.0 Ok: queued as TEST1');
      expect(got.auth).toMatchObject([{ method: 'PLAIN', username: 'alice@example.com*keygate', authzid: '' }]);
      expect(got.messages).toMatchObject([{ from: 'alice@example.com', to: ['bob@example.net', 'carol@example.org'] }]);
      expect(got.messages[0]!.body).toContain('Subject: sep');
    } finally {
      b.close();
    }
  });

  it('logs in with SASL PLAIN authzid = user, authcid = master in the authzid style', async () => {
    const b = backend(config({ 'upstream.smtp.masterStyle': 'authzid' }));
    try {
      await send(b, session(alice, 'smtp'), envelope, msg());
      expect(got.auth).toMatchObject([{ method: 'PLAIN', authzid: 'alice@example.com', authcid: 'keygate' }]);
    } finally {
      b.close();
    }
  });

  it("logs in with the account's own stored credentials (login mode account)", async () => {
    const c = config({ 'upstream.smtp.login': 'account' });
    const acct = account('alice@example.com', { username: 'alice.real', password: sealSecret(secretBox(c.secret)!, 'alice-real-pw', 'alice@example.com') });
    const b = backend(c);
    try {
      await send(b, session(acct, 'smtp'), envelope, msg());
      expect(got.auth).toMatchObject([{ username: 'alice.real', password: 'alice-real-pw' }]);
    } finally {
      b.close();
    }
  });

  it('reports the client with XCLIENT to a trusted upstream (login none)', async () => {
    const b = backend(config({ 'upstream.smtp.login': 'none', 'upstream.smtp.trusted': true, 'upstream.smtp.xclient': true }));
    try {
      await send(b, session(alice, 'smtp', '203.0.113.9'), envelope, msg());
      expect(got.auth).toEqual([]);
      expect(got.xclient[0]).toMatchObject({ ADDR: '203.0.113.9', PORT: 50123, LOGIN: 'alice@example.com' });
      expect(got.messages[0]!.remote).toBe('203.0.113.9');
    } finally {
      b.close();
    }
  });

  it('pools connections: several messages of one account share one upstream login', async () => {
    const b = backend(config());
    try {
      for (let i = 0; i < 4; i++) await send(b, session(alice, 'smtp'), envelope, msg(`pooled ${i}`));
      expect(got.messages.length).toBe(4);
      expect(got.connections).toBe(1);
      expect(got.auth.length).toBe(1);
    } finally {
      b.close();
    }
  });

  it('passes a recipient rejection back with its code and text, and refuses the message when any recipient is refused', async () => {
    const b = backend(config());
    try {
      const all = await send(b, session(alice, 'smtp'), { from: 'alice@example.com', to: ['reject@example.net'] }, msg()).catch((e: unknown) => e);
      expect(all).toBeInstanceOf(BackendRejectedError);
      expect(all).toMatchObject({ code: 550, response: '5.1.1 <reject@example.net>: Recipient address rejected' });
      const some = await send(b, session(alice, 'smtp'), { from: 'alice@example.com', to: ['bob@example.net', 'reject@example.net'] }, msg()).catch((e: unknown) => e);
      expect(some).toBeInstanceOf(BackendRejectedError);
      expect((some as BackendRejectedError).code).toBe(550);
      expect((some as BackendRejectedError).response).toContain('not delivered to reject@example.net');
      const temp = await send(b, session(alice, 'smtp'), { from: 'alice@example.com', to: ['later@example.net'] }, msg()).catch((e: unknown) => e);
      expect(temp).toMatchObject({ code: 451, response: '4.2.0 <later@example.net>: Try again later' });
    } finally {
      b.close();
    }
  });

  it('passes a rejection after DATA back with its code', async () => {
    const b = backend(config());
    try {
      const err = await send(b, session(alice, 'smtp'), envelope, msg('REFUSE-CONTENT')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackendRejectedError);
      expect(err).toMatchObject({ code: 554, response: '5.7.1 Message content rejected' });
    } finally {
      b.close();
    }
  });

  it('treats a refused upstream login as unavailable (a temporary failure for the client)', async () => {
    const b = backend(config({ 'upstream.master.password': 'wrong' }));
    try {
      await expect(send(b, session(alice, 'smtp'), envelope, msg())).rejects.toBeInstanceOf(BackendUnavailableError);
      expect(log.text()).not.toContain('"wrong"');
    } finally {
      b.close();
    }
  });

  it('a message stream that fails mid-DATA (client gone, size limit) is never completed upstream', async () => {
    const b = backend(config());
    try {
      const half = makeMessage('alice@example.com', 'bob@example.net', 'half', 200_000);
      let pushed = false;
      const failing = new Readable({
        read() {
          if (pushed) return;
          pushed = true;
          this.push(half.subarray(0, 100_000));
          setTimeout(() => this.destroy(new Error('message exceeds the size limit')), 50);
        },
      });
      await expect(send(b, session(alice, 'smtp'), envelope, failing)).rejects.toBeInstanceOf(BackendUnavailableError);
      await new Promise((r) => setTimeout(r, 100));
      expect(got.messages).toEqual([]);
      await send(b, session(alice, 'smtp'), envelope, msg('after a failed stream'));
      expect(got.messages.length).toBe(1);
    } finally {
      b.close();
    }
  });

  it('never retries a message whose connection dropped mid-DATA: the client is refused', async () => {
    const b = backend(config());
    try {
      await expect(send(b, session(alice, 'smtp'), envelope, msg('DROP-CONNECTION'))).rejects.toBeInstanceOf(BackendUnavailableError);
      expect(got.messages).toEqual([]);
      // The pool recovers for the next message.
      await send(b, session(alice, 'smtp'), envelope, msg('after drop'));
      expect(got.messages.length).toBe(1);
    } finally {
      b.close();
    }
  });
});
