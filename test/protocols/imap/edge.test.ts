import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_PROTOCOL_ERRORS } from '../../../src/protocols/limits.js';
import { type SingleKeygate, sleep, startKeygate } from '../../helpers/keygate.js';
import { LineClient, proxyV1 } from '../../helpers/line-client.js';

const ACCOUNT = 'alice@example.com';

const LIMITS = {
  'limits.lineLength': 200,
  'limits.literalSize': 100,
  'limits.commandsBeforeLogin': 8,
  'limits.loginTimeout': '1500ms',
  'limits.connectionsPerIp': 0,
};

let h: SingleKeygate;
let key: string;

beforeAll(async () => {
  h = await startKeygate({ flags: LIMITS });
  ({ key } = await h.issue(ACCOUNT, ['imap']));
});
afterAll(() => h.close());

async function connect(): Promise<LineClient> {
  const c = await LineClient.connect(h.port('imap'));
  await c.line();
  return c;
}

describe('framing and bounds', () => {
  it('answers pipelined commands in order, from one write', async () => {
    const c = await connect();
    c.write(`a NOOP\r\nb CAPABILITY\r\nc LOGIN ${ACCOUNT} ${key}\r\nd SELECT INBOX\r\ne LOGOUT\r\n`);
    const text = await c.rest();
    expect(text.split('\r\n').filter(Boolean)).toEqual([
      'a OK NOOP completed',
      '* CAPABILITY IMAP4rev1 ID LITERAL+ STARTTLS SASL-IR AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2',
      'b OK CAPABILITY completed',
      'c OK [CAPABILITY IMAP4rev1 ID LITERAL+] Logged in',
      'd NO [UNAVAILABLE] No mailbox backend is configured',
      '* BYE Logging out',
      'e OK LOGOUT completed',
    ]);
  });

  it('keeps pipelined commands waiting behind a slow failed login', async () => {
    const c = await connect();
    c.write(`a LOGIN ${ACCOUNT} wrong\r\nb NOOP\r\n`);
    expect(await c.line()).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed');
    expect(await c.line()).toBe('b OK NOOP completed');
    c.destroy();
  });

  it('says BYE and closes on a line over the limit, without waiting for its end', async () => {
    const c = await connect();
    c.write(`a LOGIN ${'x'.repeat(400)}`);
    expect(await c.rest()).toBe('* BYE Line too long\r\n');
  });

  it('refuses an oversized synchronizing literal with BAD before sending +, and goes on', async () => {
    const c = await connect();
    c.write('a LOGIN {101}\r\n');
    expect(await c.line()).toBe('a BAD Literal too large');
    await sleep(50);
    expect(c.unread()).toBe('');
    expect(await c.command('b', 'NOOP')).toBe('b OK NOOP completed');
    c.destroy();
  });

  it('says BYE on an oversized non-synchronizing literal (its bytes are already on the way)', async () => {
    const c = await connect();
    c.write(`a LOGIN {500+}\r\n${'x'.repeat(500)}\r\n`);
    expect(await c.rest()).toBe('* BYE Literal too large\r\n');
  });

  it('answers garbage with BAD, and closes after too many protocol errors', async () => {
    const c = await connect();
    c.write(Buffer.from([0x00, 0xff, 0xfe, 0x0d, 0x0a]));
    expect(await c.line()).toBe('* BAD Invalid tag');
    c.write('a FROBNICATE\r\n');
    expect(await c.line()).toBe('a BAD Unknown command');
    c.write('b LOGIN onlyone\r\n');
    expect(await c.line()).toBe('b BAD Missing arguments');
    c.write('c LOGIN "unterminated\r\n');
    expect(await c.line()).toBe('c BAD Unterminated quoted string');
    expect(await c.command('l', `LOGIN ${ACCOUNT} ${key}`)).toMatch(/^l OK /);
    c.write('d NOOP extra\r\n');
    expect(await c.line()).toBe('d BAD Too many arguments');
    // Five errors so far. MAX_PROTOCOL_ERRORS (10) are tolerated, in IMAP as in POP3: errors 6–10 are
    // answered, and the 11th is answered and closes the connection.
    expect(MAX_PROTOCOL_ERRORS).toBe(10);
    const more = MAX_PROTOCOL_ERRORS - 5 + 1;
    c.write(Array.from({ length: more }, (_, i) => `g${i} ???\r\n`).join(''));
    const text = await c.rest();
    expect(text.split('\r\n').filter(Boolean)).toEqual([
      ...Array.from({ length: more }, (_, i) => `g${i} BAD Invalid command name`),
      '* BYE Too many protocol errors',
    ]);
  });

  it('counts malformed SASL responses toward the protocol-error limit, as POP3 does', async () => {
    const c = await connect();
    for (let i = 0; i < 5; i++) {
      c.write(`s${i} AUTHENTICATE PLAIN ${i % 2 ? '!!!notbase64' : Buffer.from('no-nul-fields').toString('base64')}\r\n`);
      expect(await c.line()).toMatch(new RegExp(`^s${i} BAD `));
    }
    expect(await c.command('l', `LOGIN ${ACCOUNT} ${key}`)).toMatch(/^l OK /);
    // Five errors so far: five more are answered, the 11th closes.
    c.write(Array.from({ length: 6 }, (_, i) => `g${i} ???\r\n`).join(''));
    expect((await c.rest()).split('\r\n').filter(Boolean).at(-1)).toBe('* BYE Too many protocol errors');
  });

  it('says BYE after too many commands before login', async () => {
    const c = await connect();
    const replies: string[] = [];
    for (let i = 1; i <= 8; i++) replies.push(await c.command(`n${i}`, 'NOOP'));
    expect(replies.every((r) => r.endsWith('OK NOOP completed'))).toBe(true);
    c.write('n9 NOOP\r\n');
    expect(await c.rest()).toBe('* BYE Too many commands before login\r\n');
  });

  it('does not count commands after login against the pre-login limit', async () => {
    const c = await connect();
    expect(await c.command('a', `LOGIN ${ACCOUNT} ${key}`)).toMatch(/^a OK/);
    for (let i = 0; i < 12; i++) expect(await c.command(`n${i}`, 'NOOP')).toBe(`n${i} OK NOOP completed`);
    c.destroy();
  });

  it('logs out a client that does not log in within the login timeout', async () => {
    const c = await connect();
    const started = Date.now();
    expect(await c.rest(4000)).toBe('* BYE Autologout; idle for too long\r\n');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1200);
  });

  it('survives clients that vanish mid-command, mid-literal and mid-login', async () => {
    const before = h.sessions.count();
    const a = await connect();
    a.write('a LOGIN {10}\r\n');
    expect(await a.line()).toBe('+ Ready for literal data');
    a.write('abc');
    a.destroy();

    const b = await connect();
    b.write(`a LOGIN ${ACCOUNT} wrong-key\r\n`); // server is in its failure delay when we go
    b.destroy();

    const c = await connect();
    c.write(`a LOGIN ${ACCOUNT} ${key}\r\n`); // may succeed after we are gone: must not stay registered
    c.destroy();

    const d = await connect();
    d.write('a AUTHENTICATE PLAIN\r\n');
    expect(await d.line()).toBe('+ ');
    d.destroy();

    await sleep(200);
    expect(h.sessions.count()).toBe(before);
    const e = await connect();
    expect(await e.command('z', 'NOOP')).toBe('z OK NOOP completed');
    e.destroy();
  });
});

describe('PROXY protocol, LOGINDISABLED and STARTTLS', () => {
  let p: SingleKeygate;
  let pkey: string;
  beforeAll(async () => {
    p = await startKeygate({ flags: { proxyProtocol: true } });
    ({ key: pkey } = await p.issue(ACCOUNT, ['imap']));
  });
  afterAll(() => p.close());

  it('before TLS from a non-loopback client: LOGINDISABLED, no AUTH=, and LOGIN / AUTHENTICATE get PRIVACYREQUIRED', async () => {
    const c = await LineClient.connect(p.port('imap'), { prefix: proxyV1('203.0.113.7') });
    const greeting = await c.line();
    expect(greeting).toBe('* OK [CAPABILITY IMAP4rev1 ID LITERAL+ STARTTLS LOGINDISABLED] Keygate ready');
    c.write('a CAPABILITY\r\n');
    expect(await c.response('a')).toEqual(['* CAPABILITY IMAP4rev1 ID LITERAL+ STARTTLS LOGINDISABLED', 'a OK CAPABILITY completed']);
    expect(await c.command('b', `LOGIN ${ACCOUNT} ${pkey}`)).toBe('b NO [PRIVACYREQUIRED] Use STARTTLS before logging in');
    expect(await c.command('c', 'AUTHENTICATE PLAIN')).toBe('c NO [PRIVACYREQUIRED] Use STARTTLS before logging in');
    // Nothing was even tried, so nothing was audited.
    expect(p.audits().filter((a) => a.ip === '203.0.113.7')).toEqual([]);

    expect(await c.command('d', 'STARTTLS')).toBe('d OK Begin TLS negotiation now');
    await c.upgrade();
    c.write('e CAPABILITY\r\n');
    expect(await c.response('e')).toEqual(['* CAPABILITY IMAP4rev1 ID LITERAL+ SASL-IR AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2', 'e OK CAPABILITY completed']);
    expect(await c.command('f', 'STARTTLS')).toBe('f BAD TLS is already active');
    expect(await c.command('g', `LOGIN ${ACCOUNT} ${pkey}`)).toMatch(/^g OK /);
    // Audit and limits see the client behind the proxy.
    expect(p.audits().at(-1)).toMatchObject({ ip: '203.0.113.7', result: 'success', protocol: 'imap' });
    c.destroy();
  });

  it('discards commands pipelined after STARTTLS (command injection)', async () => {
    const c = await LineClient.connect(p.port('imap'), { prefix: proxyV1('198.51.100.9') });
    await c.line();
    c.write(`a STARTTLS\r\nb CAPABILITY\r\nc LOGIN ${ACCOUNT} ${pkey}\r\n`);
    expect(await c.line()).toBe('a OK Begin TLS negotiation now');
    await c.upgrade();
    c.write('d NOOP\r\n');
    expect(await c.line()).toBe('d OK NOOP completed');
    await sleep(50);
    expect(c.unread()).toBe('');
    expect(p.audits().filter((a) => a.ip === '198.51.100.9')).toEqual([]);
    c.destroy();
  });

  it('implicit TLS from a non-loopback client offers login at once', async () => {
    const c = await LineClient.connect(p.port('imaps'), { tls: true, prefix: proxyV1('192.0.2.44') });
    expect(await c.line()).toBe('* OK [CAPABILITY IMAP4rev1 ID LITERAL+ SASL-IR AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2] Keygate ready');
    expect(await c.command('a', `LOGIN ${ACCOUNT} ${pkey}`)).toMatch(/^a OK /);
    c.destroy();
  });

  it('a connection without a PROXY header is dropped', async () => {
    const c = await LineClient.connect(p.port('imap'));
    c.write('a NOOP\r\n');
    expect(await c.rest(7000)).toBe('');
  }, 10_000);
});

describe('allowPlaintext and connection limits', () => {
  it('auth.allowPlaintext offers login before TLS to non-loopback clients', async () => {
    const p = await startKeygate({ flags: { proxyProtocol: true, 'auth.allowPlaintext': true } });
    try {
      const { key: k } = await p.issue(ACCOUNT, ['imap']);
      const c = await LineClient.connect(p.port('imap'), { prefix: proxyV1('203.0.113.8') });
      expect(await c.line()).toContain('AUTH=PLAIN');
      expect(await c.command('a', `LOGIN ${ACCOUNT} ${k}`)).toMatch(/^a OK /);
      c.destroy();
    } finally {
      await p.close();
    }
  });

  it('refuses connections over the per-IP limit with * BYE', async () => {
    const p = await startKeygate({ flags: { 'limits.connectionsPerIp': 2 } });
    try {
      const a = await LineClient.connect(p.port('imap'));
      const b = await LineClient.connect(p.port('imap'));
      await a.line();
      await b.line();
      const c = await LineClient.connect(p.port('imap'));
      expect(await c.rest()).toBe('* BYE Too many connections from your address\r\n');
      a.destroy();
      b.destroy();
    } finally {
      await p.close();
    }
  });
});

describe('shutdown', () => {
  it('says BYE at once to idle connections, finishes a running command first, and closes', async () => {
    const p = await startKeygate({ flags: { 'auth.failureDelay': '300ms' } });
    const { key: k } = await p.issue(ACCOUNT, ['imap']);
    const idle = await LineClient.connect(p.port('imap'));
    await idle.line();
    const loggedIn = await LineClient.connect(p.port('imaps'), { tls: true });
    await loggedIn.line();
    await loggedIn.command('a', `LOGIN ${ACCOUNT} ${k}`);
    const busy = await LineClient.connect(p.port('imap'));
    await busy.line();
    busy.write(`a LOGIN ${ACCOUNT} wrong\r\n`);
    await sleep(50);
    const started = Date.now();
    await p.close(5000);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(await idle.rest()).toBe('* BYE Server shutting down\r\n');
    expect(await loggedIn.rest()).toBe('* BYE Server shutting down\r\n');
    expect(await busy.rest()).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed\r\n* BYE Server shutting down\r\n');
  });
});

describe('a client that half-closes', () => {
  it('gets an answer to every command it sent before its FIN, then the connection closes', async () => {
    const raw = net.connect({ port: h.port('imap'), host: '127.0.0.1', allowHalfOpen: true });
    let text = '';
    raw.on('data', (d: Buffer) => (text += d.toString()));
    const closed = new Promise((r) => raw.once('close', r));
    raw.end(`a CAPABILITY\r\nb LOGIN ${ACCOUNT} ${key}\r\nc NOOP\r\n`);
    await closed;
    expect(text).toMatch(/\r\na OK [^\r]*\r\nb OK \[CAPABILITY [^\r]*\] Logged in\r\n(\* [^\r]*\r\n)*c OK [^\r]*\r\n$/);
  });
});
