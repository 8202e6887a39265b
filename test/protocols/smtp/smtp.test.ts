import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import type { Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { LoginLimiter } from '../../../src/auth/authenticate.js';
import {
  BackendRejectedError,
  BackendUnavailableError,
  type Backend,
  type Backends,
  type SessionContext,
  type SmtpEnvelope,
  type SmtpRelay,
} from '../../../src/backends/types.js';
import { generateKey } from '../../../src/keys/format.js';
import { createSelfSignedCertificate } from '../../../src/tls/index.js';
import { createHarness, type Harness, type Keygate } from '../../helpers/keygate.js';
import { LineClient, plain } from '../../helpers/line-client.js';
import { SWAKS } from '../../helpers/tools.js';
import { waitFor } from '../../helpers/wait.js';

const ALICE = 'alice@example.com';
const AUTH_FAILED = '535 5.7.8 Authentication credentials invalid';

let h: Harness;
let aliceKey: string;
/** The Keygate the running test started. */
let kg: Keygate;

beforeAll(async () => {
  h = await createHarness();
  aliceKey = (await h.issue(ALICE, ['smtp'])).key;
  await h.store.updateAccount(ALICE, { aliases: ['al@example.com'] });
});

afterAll(async () => {
  await h.close();
});

afterEach(async () => {
  await h.stopAll();
});

async function start(flags: Record<string, unknown> = {}, backends?: Backends, limiter: LoginLimiter | null = null) {
  kg = await h.start({ protocols: ['smtp'], flags, limiter, ...(backends && { backends }) });
  return { port: kg.port('smtp'), securePort: kg.port('smtps') };
}

const reply = (c: LineClient, timeoutMs = 3000): Promise<string[]> => c.reply(timeoutMs);

/** An SMTP backend from one send function, the way a relay is opened per session. */
function relayBackend(send: (ctx: SessionContext, envelope: SmtpEnvelope, message: Readable) => Promise<string>): Backend<SmtpRelay> {
  return {
    async open(ctx) {
      return { send: (envelope, message) => send(ctx, envelope, message), close: () => {} };
    },
  };
}

async function cmd(c: LineClient, line: string): Promise<string> {
  c.write(`${line}\r\n`);
  return (await reply(c)).join('\n');
}

async function connect(port: number, opts: { tls?: boolean; prefix?: string } = {}): Promise<LineClient> {
  const c = await LineClient.connect(port, opts);
  expect((await reply(c)).at(-1)).toMatch(/^220 .* ESMTP Keygate$/);
  return c;
}

async function ehlo(c: LineClient): Promise<string[]> {
  c.write('EHLO client.test\r\n');
  return (await reply(c)).map((l) => l.slice(4));
}

async function authPlain(c: LineClient, user = ALICE, key = aliceKey): Promise<string> {
  return cmd(c, `AUTH PLAIN ${plain(user, key)}`);
}

function transport(port: number, secure: boolean, user: string, pass: string, extra: Record<string, unknown> = {}) {
  return nodemailer.createTransport({ host: '127.0.0.1', port, secure, auth: { user, pass }, tls: { rejectUnauthorized: false }, ...extra });
}

function capturingBackend(seen: Array<{ ctx: SessionContext; envelope: SmtpEnvelope; message: string }>): Backend<SmtpRelay> {
  return relayBackend(async (ctx, envelope, message) => {
    let text = '';
    for await (const chunk of message) text += (chunk as Buffer).toString();
    seen.push({ ctx, envelope, message: text });
    return '2.0.0 Ok: queued as TEST123';
  });
}

describe('SMTP listeners with nodemailer', () => {
  it('authenticates with AUTH PLAIN and LOGIN over STARTTLS and over implicit TLS', async () => {
    const { port, securePort } = await start();
    await expect(transport(port, false, ALICE, aliceKey, { requireTLS: true }).verify()).resolves.toBe(true);
    await expect(transport(port, false, ALICE, aliceKey, { requireTLS: true, authMethod: 'LOGIN' }).verify()).resolves.toBe(true);
    await expect(transport(securePort, true, 'AL@EXAMPLE.COM', aliceKey).verify()).resolves.toBe(true);
    await expect(transport(securePort, true, ALICE, aliceKey, { authMethod: 'LOGIN' }).verify()).resolves.toBe(true);
  });

  it('gives every refused credential the same 535 5.7.8, after the failure delay', async () => {
    const { port, securePort } = await start({ 'auth.failureDelay': '60ms' });
    const revoked = await h.issue(ALICE, ['smtp']);
    await h.store.revokeKey(revoked.id, new Date().toISOString());
    const popOnly = await h.issue(ALICE, ['pop3']);
    const bob = await h.issue('bob@example.com', ['smtp']);
    const cases: Array<[string, string]> = [
      [ALICE, 'wrong'],
      [ALICE, generateKey()],
      [ALICE, revoked.key],
      ['nobody@example.com', aliceKey],
      [ALICE, popOnly.key],
      [ALICE, bob.key],
    ];
    for (const [user, pass] of cases) {
      for (const [p, secure, method] of [
        [port, false, 'PLAIN'],
        [securePort, true, 'LOGIN'],
      ] as const) {
        const started = Date.now();
        const err = (await transport(p, secure, user, pass, { authMethod: method }).verify().catch((e: unknown) => e)) as { responseCode?: number; response?: string };
        expect(err.responseCode).toBe(535);
        expect(err.response).toBe(AUTH_FAILED);
        expect(Date.now() - started).toBeGreaterThanOrEqual(55);
      }
    }
  });

  it('answers 454 4.7.0 when the login is refused for now', async () => {
    const { securePort } = await start({}, undefined, { reserve: async () => null });
    const err = (await transport(securePort, true, ALICE, aliceKey).verify().catch((e: unknown) => e)) as { responseCode?: number; response?: string };
    expect(err.responseCode).toBe(454);
    expect(err.response).toMatch(/^454 4\.7\.0 /);
  });

  it('with no backend, refuses the message at DATA with 451 4.3.0', async () => {
    const { securePort } = await start();
    const err = (await transport(securePort, true, ALICE, aliceKey)
      .sendMail({ from: ALICE, to: 'someone@example.net', subject: 'hi', text: 'hello' })
      .catch((e: unknown) => e)) as { responseCode?: number; response?: string; command?: string };
    expect(err.responseCode).toBe(451);
    expect(err.response).toMatch(/^451 4\.3\.0 /);
  });

  it('hands the message to the backend and returns its acceptance text', async () => {
    const seen: Array<{ ctx: SessionContext; envelope: SmtpEnvelope; message: string }> = [];
    const { port } = await start({}, { imap: null, pop3: null, smtp: capturingBackend(seen) });
    const info = await transport(port, false, ALICE, aliceKey, { requireTLS: true }).sendMail({
      envelope: { from: 'Al@Example.com', to: ['x@example.net', 'y@example.org'] },
      from: 'Al@Example.com',
      to: 'x@example.net',
      subject: 'hello',
      text: 'body text',
    });
    expect(info.response).toBe('250 2.0.0 Ok: queued as TEST123');
    expect(seen).toHaveLength(1);
    // nodemailer lower-cases the domain.
    expect(seen[0]!.envelope).toEqual({ from: 'Al@example.com', to: ['x@example.net', 'y@example.org'] });
    expect(seen[0]!.message).toContain('body text');
    expect(seen[0]!.ctx).toMatchObject({ protocol: 'smtp', clientIp: '127.0.0.1', secure: true });
    expect(seen[0]!.ctx.account.address).toBe(ALICE);
  });

  it('passes backend refusals through and maps an unreachable backend to 451 4.4.1', async () => {
    let mode: 'reject' | 'down' = 'reject';
    const smtp = relayBackend(async (_ctx, _env, message) => {
      message.resume();
      if (mode === 'reject') throw new BackendRejectedError(550, '5.7.1 Recipient refused upstream');
      throw new BackendUnavailableError('connect ECONNREFUSED');
    });
    const { securePort } = await start({}, { imap: null, pop3: null, smtp });
    const t = transport(securePort, true, ALICE, aliceKey);
    const mail = { from: ALICE, to: 'x@example.net', text: 'hi' };
    const rejected = (await t.sendMail(mail).catch((e: unknown) => e)) as { response?: string };
    expect(rejected.response).toBe('550 5.7.1 Recipient refused upstream');
    mode = 'down';
    const down = (await t.sendMail(mail).catch((e: unknown) => e)) as { response?: string };
    expect(down.response).toMatch(/^451 4\.4\.1 /);
  });

  it('cuts off a message over the size limit with 552', async () => {
    const seen: Array<{ ctx: SessionContext; envelope: SmtpEnvelope; message: string }> = [];
    const { securePort } = await start({ 'limits.messageSize': '2000' }, { imap: null, pop3: null, smtp: capturingBackend(seen) });
    const err = (await transport(securePort, true, ALICE, aliceKey)
      .sendMail({ envelope: { from: ALICE, to: ['x@example.net'], size: 100 } as never, from: ALICE, to: 'x@example.net', text: 'y'.repeat(50_000) })
      .catch((e: unknown) => e)) as { responseCode?: number };
    expect(err.responseCode).toBe(552);
    expect(seen).toHaveLength(0);
  });
});

describe('SMTP sender and session rules (raw client)', () => {
  it('advertises AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2, STARTTLS and SIZE to a loopback client', async () => {
    const { port } = await start();
    const c = await connect(port);
    const ext = await ehlo(c);
    expect(ext).toContain('AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2');
    expect(ext).toContain('STARTTLS');
    expect(ext).toContain(`SIZE ${35 * 1024 * 1024}`);
    c.destroy();
  });

  it('MAIL FROM must be the account address or an alias (any case): else 553 5.7.1', async () => {
    const { port } = await start();
    const c = await connect(port);
    await ehlo(c);
    expect(await cmd(c, 'MAIL FROM:<alice@example.com>')).toMatch(/^530 5\.7\.0 /);
    expect(await authPlain(c)).toBe('235 Authentication successful');
    expect(await cmd(c, 'MAIL FROM:<mallory@example.com>')).toBe('553 5.7.1 Sender address not owned by the authenticated account');
    expect(await cmd(c, 'MAIL FROM:<>')).toMatch(/^553 5\.7\.1 /);
    expect(await cmd(c, 'MAIL FROM:<AL@EXAMPLE.COM>')).toBe('250 Accepted');
    expect(await cmd(c, 'RSET')).toMatch(/^250/);
    expect(await cmd(c, 'MAIL FROM:<Alice@Example.com> SIZE=100')).toBe('250 Accepted');
    expect(await cmd(c, 'RCPT TO:<x@example.net>')).toBe('250 Accepted');
    expect(await cmd(c, 'DATA')).toMatch(/^354/);
    c.write('Subject: t\r\n\r\nhello\r\n.\r\n');
    expect((await reply(c)).join('\n')).toBe('451 4.3.0 No mail backend is configured, message not accepted');
    expect(await cmd(c, 'QUIT')).toMatch(/^221/);
    await c.waitClosed();
  });

  it('from a non-loopback client (PROXY v1 header) before STARTTLS: no AUTH offered or accepted', async () => {
    const { port } = await start({ proxyProtocol: 'true' });
    const c = await connect(port, { prefix: 'PROXY TCP4 198.51.100.9 127.0.0.1 40000 587\r\n' });
    const ext = await ehlo(c);
    expect(ext).toContain('STARTTLS');
    expect(ext.some((e) => e.startsWith('AUTH'))).toBe(false);
    expect(await authPlain(c)).toMatch(/^5\d\d /);
    expect(await cmd(c, 'MAIL FROM:<alice@example.com>')).toMatch(/^530 5\.7\.0 /);
    expect(await cmd(c, 'STARTTLS')).toMatch(/^220/);
    await c.upgrade();
    expect(await ehlo(c)).toContain('AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2');
    const scoped = await h.issue(ALICE, ['smtp'], { allowedIps: ['198.51.100.0/24'] });
    expect(await authPlain(c, ALICE, scoped.key)).toBe('235 Authentication successful');
    c.destroy();
  });

  it('the PROXY source address is what key IP limits see; auth.allowPlaintext offers AUTH before TLS', async () => {
    const { port } = await start({ proxyProtocol: 'true', 'auth.allowPlaintext': 'true' });
    const elsewhere = await h.issue(ALICE, ['smtp'], { allowedIps: ['10.0.0.0/8'] });
    const c = await connect(port, { prefix: 'PROXY TCP4 198.51.100.9 127.0.0.1 40000 587\r\n' });
    expect(await ehlo(c)).toContain('AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2');
    expect(await authPlain(c, ALICE, elsewhere.key)).toBe(AUTH_FAILED);
    expect(await authPlain(c)).toBe('235 Authentication successful');
    c.destroy();
  });

  it('ends an authenticated session within 1 s with 421 when its key is revoked (after STARTTLS too)', async () => {
    const { port } = await start();
    for (const starttls of [false, true]) {
      const k = await h.issue(ALICE, ['smtp']);
      const c = await connect(port);
      await ehlo(c);
      if (starttls) {
        expect(await cmd(c, 'STARTTLS')).toMatch(/^220/);
        await c.upgrade();
        await ehlo(c);
      }
      expect(await authPlain(c, ALICE, k.key)).toBe('235 Authentication successful');
      await waitFor(() => kg.sessions.count('smtp') === 1);
      const t0 = Date.now();
      await h.store.revokeKey(k.id, new Date().toISOString());
      expect(await c.line(1000)).toBe('421 4.7.0 Session ended: key revoked');
      await c.waitClosed(1000);
      expect(Date.now() - t0).toBeLessThan(1000);
      await waitFor(() => kg.sessions.count('smtp') === 0);
    }
  });

  it('closes a client that has not logged in within the login timeout with 421', async () => {
    const { port } = await start({ 'limits.loginTimeout': '300ms' });
    const c = await connect(port);
    await ehlo(c);
    expect(await c.line(1500)).toBe('421 4.4.2 Login timeout, closing connection');
    await c.waitClosed();
  });

  it('bounds line length, commands before login and garbage', async () => {
    const { port } = await start({ 'limits.lineLength': '200', 'limits.commandsBeforeLogin': '4' });
    const long = await connect(port);
    long.write(`EHLO ${'a'.repeat(500)}\r\n`);
    expect(await long.line()).toMatch(/^421 /);
    await long.waitClosed();

    const chatty = await connect(port);
    const replies: string[] = [];
    for (let i = 0; i < 5; i++) replies.push(await cmd(chatty, 'NOOP'));
    expect(replies.slice(0, 4)).toEqual(['250 OK', '250 OK', '250 OK', '250 OK']);
    expect(replies[4]).toMatch(/^421 .*unauthenticated/);
    await chatty.waitClosed();

    const junk = await connect(port);
    const garbage = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x1b, 0x0d, 0x0a]);
    let last = '';
    for (let i = 0; i < 10 && !junk.isClosed; i++) last = (junk.write(garbage), (await reply(junk)).join('\n'));
    expect(last).toMatch(/^421 /);
    await junk.waitClosed();
  });

  it('survives clients that vanish mid-command and mid-login, and leaks no session', async () => {
    const { port } = await start({ 'auth.failureDelay': '50ms' });
    const a = await connect(port);
    a.write(`EHLO x\r\nAUTH PLAIN ${plain(ALICE, aliceKey).slice(0, 8)}`);
    a.destroy();
    const b = await connect(port);
    b.write(`EHLO x\r\nAUTH PLAIN ${plain(ALICE, aliceKey)}\r\nMAIL FROM:<alice@example.com>\r\n`);
    b.destroy();
    const d = await connect(port);
    d.write(`EHLO x\r\nAUTH PLAIN ${plain(ALICE, generateKey())}\r\n`);
    await new Promise((r) => setTimeout(r, 20));
    d.destroy();
    await new Promise((r) => setTimeout(r, 200));
    expect(kg.sessions.count('smtp')).toBe(0);
    const c = await connect(port);
    await ehlo(c);
    expect(await authPlain(c)).toBe('235 Authentication successful');
    c.destroy();
  });

  it('counts connections per IP, and gives STARTTLS sessions back to the count when they end', async () => {
    const { port } = await start({ 'limits.connectionsPerIp': '1' });
    // A STARTTLS session, one whose handshake never happens, and a plain one: each must free its slot.
    const tlsSession = await connect(port);
    await ehlo(tlsSession);
    expect(await cmd(tlsSession, 'STARTTLS')).toMatch(/^220/);
    await tlsSession.upgrade();
    await ehlo(tlsSession);
    expect(await cmd(tlsSession, 'QUIT')).toMatch(/^221/);
    await tlsSession.waitClosed();
    await new Promise((r) => setTimeout(r, 100));

    const abandoned = await connect(port);
    expect(await cmd(abandoned, 'STARTTLS')).toMatch(/^220/);
    abandoned.destroy();
    await new Promise((r) => setTimeout(r, 100));

    const first = await connect(port);
    const second = await LineClient.connect(port);
    expect(await second.line()).toBe('421 4.7.0 Too many connections from your address, try again later');
    await second.waitClosed();
    first.destroy();
  });

  it('says 421 to open sessions when the listener shuts down', async () => {
    const { port } = await start();
    const c = await connect(port);
    await ehlo(c);
    expect(await authPlain(c)).toBe('235 Authentication successful');
    const closing = kg.close();
    expect(await c.line(2000)).toBe('421 4.3.2 Server shutting down');
    await c.waitClosed(2000);
    await closing;
  });
});

describe('SMTP certificate reload', () => {
  it('STARTTLS clients with and without SNI get the new certificate after the files change', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-smtp-cert-'));
    const certPath = join(dir, 'cert.pem');
    const keyPath = join(dir, 'key.pem');
    const first = await createSelfSignedCertificate('first.test');
    writeFileSync(certPath, first.certPem);
    writeFileSync(keyPath, first.keyPem);
    try {
      const { port } = await start({ 'tls.cert': certPath, 'tls.key': keyPath, 'tls.dir': dir, hostname: 'first.test' });
      const provider = kg.tls;
      const peer = async (servername: string): Promise<string> => {
        const c = await connect(port);
        await ehlo(c);
        expect(await cmd(c, 'STARTTLS')).toMatch(/^220/);
        await c.upgrade(servername);
        const fp = (c.socket as TLSSocket).getPeerX509Certificate()!.fingerprint256;
        c.destroy();
        return fp;
      };
      const firstFp = new X509Certificate(first.certPem).fingerprint256;
      expect(await peer('')).toBe(firstFp);
      expect(await peer('localhost')).toBe(firstFp);

      const second = await createSelfSignedCertificate('second.test');
      const changed = new Promise<void>((resolve) => provider.onChange(() => resolve()));
      writeFileSync(keyPath, second.keyPem);
      writeFileSync(certPath, second.certPem);
      await changed;
      const secondFp = new X509Certificate(second.certPem).fingerprint256;
      expect(await peer('')).toBe(secondFp);
      expect(await peer('localhost')).toBe(secondFp);
    } finally {
      await kg.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SMTP with command-line clients', () => {
  function run(command: string, args: string[]): Promise<{ code: number | null; out: string }> {
    return new Promise((resolve) => {
      execFile(command, args, { timeout: 15_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
      });
    });
  }

  it.skipIf(!SWAKS.found)('swaks: AUTH PLAIN over STARTTLS and over implicit TLS; DATA without backend is 451', async () => {
    SWAKS.assertCapable();
    const { port, securePort } = await start();
    const base = ['--server', '127.0.0.1', '--auth', 'PLAIN', '--auth-user', ALICE, '--auth-password', aliceKey, '--from', ALICE, '--to', 'x@example.net'];
    const starttls = await run('swaks', [...base, '--port', String(port), '-tls', '--quit-after', 'AUTH']);
    expect(starttls.out).toContain('235 Authentication successful');
    expect(starttls.code).toBe(0);
    const implicit = await run('swaks', [...base, '--port', String(securePort), '--tls-on-connect']);
    expect(implicit.out).toContain('235 Authentication successful');
    expect(implicit.out).toContain('451 4.3.0');
    const wrong = await run('swaks', [...base.slice(0, 8), '--auth-password', generateKey(), '--port', String(securePort), '--tls-on-connect', '--quit-after', 'AUTH']);
    expect(wrong.out).toContain(AUTH_FAILED);
    expect(wrong.code).not.toBe(0);
  });

  it('openssl s_client -starttls smtp', async () => {
    const { port } = await start();
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-starttls', 'smtp', '-quiet'], { stdio: ['pipe', 'pipe', 'pipe'] });
      p.stdin.on('error', () => {}); // s_client may be gone before we write
      let text = '';
      p.stdout.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.includes('221 ')) p.stdin.end();
      });
      p.on('error', reject);
      p.on('close', () => resolve(text));
      p.stdin.write(`EHLO client.test\r\nAUTH PLAIN ${plain(ALICE, aliceKey)}\r\nMAIL FROM:<al@example.com>\r\nQUIT\r\n`);
      setTimeout(() => p.kill(), 8000).unref();
    });
    expect(out).toContain('250-AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2');
    expect(out).not.toContain('250-STARTTLS');
    expect(out).toContain('235 Authentication successful');
    expect(out).toContain('250 Accepted');
    expect(out).toContain('221 ');
  });
});
