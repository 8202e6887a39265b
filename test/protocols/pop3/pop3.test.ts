import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { LoginLimiter } from '../../../src/auth/authenticate.js';
import { BackendUnavailableError, type Backend, type Backends, type PipeSession, type SessionContext } from '../../../src/backends/types.js';
import { generateKey } from '../../../src/keys/format.js';
import { MAX_PROTOCOL_ERRORS } from '../../../src/protocols/limits.js';
import { createHarness, type Harness, type Keygate } from '../../helpers/keygate.js';
import { LineClient, plain } from '../../helpers/line-client.js';
import { waitFor } from '../../helpers/wait.js';

const ALICE = 'alice@example.com';
const AUTH_FAILED = '-ERR [AUTH] Authentication failed';
const NO_BACKEND = '-ERR [SYS/PERM] No mailbox backend is configured';

let h: Harness;
let aliceKey: string;
/** The Keygate the running test started. */
let kg: Keygate;

beforeAll(async () => {
  h = await createHarness();
  aliceKey = (await h.issue(ALICE, ['pop3'])).key;
  await h.store.updateAccount(ALICE, { aliases: ['al@example.com'] });
});

afterAll(async () => {
  await h.close();
});

afterEach(async () => {
  await h.stopAll();
});

async function start(flags: Record<string, unknown> = {}, backends?: Backends, limiter: LoginLimiter | null = null) {
  kg = await h.start({ protocols: ['pop3'], flags, limiter, ...(backends && { backends }) });
  return { port: kg.port('pop3'), securePort: kg.port('pop3s') };
}

async function connect(port: number, opts: { tls?: boolean; prefix?: string } = {}): Promise<LineClient> {
  const c = await LineClient.connect(port, opts);
  expect(await c.line()).toBe('+OK Keygate ready');
  return c;
}

async function login(c: LineClient, user = ALICE, key = aliceKey): Promise<void> {
  expect(await c.send(`USER ${user}`)).toMatch(/^\+OK/);
  expect(await c.send(`PASS ${key}`)).toBe('+OK Logged in');
}

async function capa(c: LineClient): Promise<string[]> {
  c.write('CAPA\r\n');
  return c.multiline();
}

describe('POP3 listeners: capabilities and login', () => {
  it('greets, and answers CAPA to a loopback client with USER, SASL PLAIN and STLS, in one write', async () => {
    const { port } = await start();
    const c = await connect(port);
    c.chunks.length = 0;
    const lines = await capa(c);
    expect(lines).toEqual([
      '+OK Capability list follows',
      'TOP',
      'UIDL',
      'RESP-CODES',
      'AUTH-RESP-CODE',
      'PIPELINING',
      'USER',
      'SASL PLAIN LOGIN OAUTHBEARER XOAUTH2',
      'STLS',
      'IMPLEMENTATION Keygate',
      '.',
    ]);
    expect(c.chunks).toEqual([`${lines.join('\r\n')}\r\n`]);
    c.destroy();
  });

  it('logs in with USER/PASS; mailbox commands say there is no backend; NOOP, CAPA and QUIT work', async () => {
    const { port } = await start();
    const c = await connect(port);
    await login(c);
    await waitFor(() => kg.sessions.count('pop3') === 1);
    for (const cmd of ['STAT', 'LIST', 'LIST 1', 'RETR 1', 'DELE 1', 'RSET', 'TOP 1 0', 'UIDL']) expect(await c.send(cmd)).toBe(NO_BACKEND);
    expect(await c.send('NOOP')).toBe('+OK');
    const after = await capa(c);
    expect(after).not.toContain('USER');
    expect(after).not.toContain('STLS');
    expect(await c.send('USER bob@example.com')).toBe('-ERR Command not valid in this state');
    expect(await c.send('QUIT')).toBe('+OK Bye');
    await c.waitClosed();
    await waitFor(() => kg.sessions.count('pop3') === 0);
  });

  it('accepts an alias in any case and ignores whitespace around the key', async () => {
    const { port } = await start();
    const c = await connect(port);
    await login(c, 'AL@Example.COM', `  ${aliceKey}  `);
    c.destroy();
  });

  it('gives every refused credential the same -ERR [AUTH], after the failure delay', async () => {
    const { port } = await start({ 'auth.failureDelay': '60ms' });
    const revoked = await h.issue(ALICE, ['pop3']);
    await h.store.revokeKey(revoked.id, new Date().toISOString());
    const smtpOnly = await h.issue(ALICE, ['smtp']);
    const bob = await h.issue('bob@example.com', ['pop3']);
    const cases: Array<[string, string]> = [
      [ALICE, 'not-a-key'],
      [ALICE, generateKey()],
      [ALICE, revoked.key],
      ['nobody@example.com', aliceKey],
      [ALICE, smtpOnly.key],
      [ALICE, bob.key],
    ];
    const c = await connect(port);
    for (const [user, key] of cases) {
      for (const viaSasl of [false, true]) {
        const started = Date.now();
        if (viaSasl) expect(await c.send(`AUTH PLAIN ${plain(user, key)}`)).toBe(AUTH_FAILED);
        else {
          expect(await c.send(`USER ${user}`)).toMatch(/^\+OK/);
          expect(await c.send(`PASS ${key}`)).toBe(AUTH_FAILED);
        }
        expect(Date.now() - started).toBeGreaterThanOrEqual(55);
      }
    }
    c.destroy();
  });

  it('answers -ERR [SYS/TEMP] when the login is refused for now (rate limit, store down)', async () => {
    const { port } = await start({}, undefined, { reserve: async () => null });
    const c = await connect(port);
    expect(await c.send(`USER ${ALICE}`)).toMatch(/^\+OK/);
    expect(await c.send(`PASS ${aliceKey}`)).toMatch(/^-ERR \[SYS\/TEMP\] /);
    c.destroy();
  });

  it('needs USER before PASS, and a user name', async () => {
    const { port } = await start();
    const c = await connect(port);
    expect(await c.send(`PASS ${aliceKey}`)).toBe('-ERR Send USER first');
    expect(await c.send('USER')).toBe('-ERR Missing user name');
    c.destroy();
  });
});

describe('POP3 AUTH PLAIN', () => {
  it('logs in with an initial response', async () => {
    const { port } = await start();
    const c = await connect(port);
    expect(await c.send(`AUTH PLAIN ${plain(ALICE, aliceKey)}`)).toBe('+OK Logged in');
    c.destroy();
  });

  it('logs in after the "+ " continuation, and "*" cancels', async () => {
    const { port } = await start();
    const c = await connect(port);
    expect(await c.send('AUTH PLAIN')).toBe('+ ');
    expect(await c.send('*')).toBe('-ERR Authentication cancelled');
    expect(await c.send('auth plain')).toBe('+ ');
    expect(await c.send(plain(ALICE, aliceKey))).toBe('+OK Logged in');
    c.destroy();
  });

  it('lists its mechanisms, refuses others and malformed responses', async () => {
    const { port } = await start();
    const c = await connect(port);
    c.write('AUTH\r\n');
    expect(await c.multiline()).toEqual(['+OK Supported mechanisms follow', 'PLAIN', 'LOGIN', 'OAUTHBEARER', 'XOAUTH2', '.']);
    expect(await c.send('AUTH CRAM-MD5')).toBe('-ERR Unsupported authentication mechanism');
    expect(await c.send('AUTH PLAIN %%%')).toBe('-ERR Malformed SASL response');
    expect(await c.send('AUTH PLAIN')).toBe('+ ');
    expect(await c.send('bm90IHBsYWlu')).toBe('-ERR Malformed SASL response');
    expect(await c.send(`AUTH PLAIN ${plain(ALICE, aliceKey, 'bob@example.com')}`)).toBe(AUTH_FAILED);
    c.destroy();
  });
});

describe('POP3 TLS', () => {
  it('STLS upgrades, discards what was pipelined after it, and drops STLS from CAPA', async () => {
    const { port } = await start();
    const c = await connect(port);
    c.write('STLS\r\nCAPA\r\n');
    expect(await c.line()).toBe('+OK Begin TLS negotiation');
    await c.upgrade();
    await new Promise((r) => setTimeout(r, 50));
    expect(c.pending()).toEqual([]);
    const lines = await capa(c);
    expect(lines[0]).toBe('+OK Capability list follows');
    expect(lines).toContain('USER');
    expect(lines).not.toContain('STLS');
    expect(await c.send('STLS')).toBe('-ERR Already using TLS');
    await login(c);
    c.destroy();
  });

  it('serves implicit TLS on the secure port (TLS 1.2 at least)', async () => {
    const { securePort } = await start();
    const c = await connect(securePort, { tls: true });
    expect((c.socket as tls.TLSSocket).getProtocol()).toMatch(/TLSv1\.[23]/);
    const lines = await capa(c);
    expect(lines).toContain('USER');
    expect(lines).not.toContain('STLS');
    await login(c);
    c.destroy();

    const old = tls.connect({ host: '127.0.0.1', port: securePort, rejectUnauthorized: false, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' });
    const [err] = (await once(old, 'error')) as [Error];
    expect(err.message).toMatch(/alert protocol version/);
  });

  it('works with openssl s_client -starttls pop3', async () => {
    const { port } = await start();
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-starttls', 'pop3', '-quiet'], { stdio: ['pipe', 'pipe', 'pipe'] });
      p.stdin.on('error', () => {}); // s_client may be gone before we write
      let text = '';
      p.stdout.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.includes('+OK Bye')) p.stdin.end();
      });
      p.on('error', reject);
      p.on('close', () => resolve(text));
      p.stdin.write(`CAPA\r\nUSER ${ALICE}\r\nPASS ${aliceKey}\r\nSTAT\r\nQUIT\r\n`);
      setTimeout(() => p.kill(), 8000).unref();
    });
    expect(out).toContain('SASL PLAIN');
    expect(out).not.toMatch(/^STLS\r?$/m);
    expect(out).toContain('+OK Logged in');
    expect(out).toContain(NO_BACKEND);
    expect(out).toContain('+OK Bye');
  });
});

describe('POP3 PROXY protocol and plaintext policy', () => {
  const header = 'PROXY TCP4 203.0.113.7 127.0.0.1 40000 110\r\n';

  it('before STLS, a non-loopback client (from the PROXY v1 header) is offered neither USER nor SASL', async () => {
    const { port } = await start({ proxyProtocol: 'true' });
    const c = await connect(port, { prefix: header });
    const lines = await capa(c);
    expect(lines).toContain('STLS');
    expect(lines).not.toContain('USER');
    expect(lines.some((l) => l.startsWith('SASL'))).toBe(false);
    expect(await c.send(`USER ${ALICE}`)).toBe('-ERR [SYS/PERM] TLS required: use STLS before logging in');
    expect(await c.send(`AUTH PLAIN ${plain(ALICE, aliceKey)}`)).toBe('-ERR [SYS/PERM] TLS required: use STLS before logging in');
    expect(await c.send('STLS')).toBe('+OK Begin TLS negotiation');
    await c.upgrade();
    expect(await capa(c)).toContain('USER');
    // The key is limited to the client's network: the login sees the address from the header.
    const scoped = await h.issue(ALICE, ['pop3'], { allowedIps: ['203.0.113.0/24'] });
    await login(c, ALICE, scoped.key);
    c.destroy();
  });

  it('the PROXY source address is what key IP limits see', async () => {
    const { port } = await start({ proxyProtocol: 'true', 'auth.allowPlaintext': 'true' });
    const elsewhere = await h.issue(ALICE, ['pop3'], { allowedIps: ['10.0.0.0/8'] });
    const c = await connect(port, { prefix: header });
    expect(await capa(c)).toContain('USER');
    expect(await c.send(`USER ${ALICE}`)).toMatch(/^\+OK/);
    expect(await c.send(`PASS ${elsewhere.key}`)).toBe(AUTH_FAILED);
    await login(c);
    c.destroy();
  });
});

describe('POP3 bounds and bad input', () => {
  it('answers pipelined commands in order', async () => {
    const { port } = await start();
    const c = await connect(port);
    c.write(`CAPA\r\nUSER ${ALICE}\r\nPASS ${aliceKey}\r\nSTAT\r\nNOOP\r\nQUIT\r\n`);
    expect((await c.multiline()).at(-1)).toBe('.');
    expect(await c.line()).toMatch(/^\+OK/);
    expect(await c.line()).toBe('+OK Logged in');
    expect(await c.line()).toBe(NO_BACKEND);
    expect(await c.line()).toBe('+OK');
    expect(await c.line()).toBe('+OK Bye');
    await c.waitClosed();
  });

  it('closes on a line over the limit, with or without a line end', async () => {
    const { port } = await start({ 'limits.lineLength': '64' });
    const a = await connect(port);
    expect(await a.send(`USER ${'a'.repeat(100)}`)).toBe('-ERR Line too long, closing connection');
    await a.waitClosed();
    const b = await connect(port);
    b.write('x'.repeat(5000));
    expect(await b.line()).toBe('-ERR Line too long, closing connection');
    await b.waitClosed();
  });

  it('answers garbage bytes as unknown commands and closes after too many errors', async () => {
    const { port } = await start();
    const c = await connect(port);
    const junk = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x1b, 0x5b, 0x41, 0x0d, 0x0a]);
    // MAX_PROTOCOL_ERRORS (10) are tolerated, in POP3 as in IMAP: the 10th is answered, the 11th closes.
    expect(MAX_PROTOCOL_ERRORS).toBe(10);
    for (let i = 0; i < MAX_PROTOCOL_ERRORS; i++) expect(await (c.write(junk), c.line())).toBe('-ERR Unknown command');
    expect(await (c.write(junk), c.line())).toBe('-ERR Too many errors, closing connection');
    await c.waitClosed();
  });

  it('closes after too many commands before login', async () => {
    const { port } = await start({ 'limits.commandsBeforeLogin': '3' });
    const c = await connect(port);
    for (let i = 0; i < 3; i++) expect((await capa(c))[0]).toMatch(/^\+OK/);
    expect(await c.send('CAPA')).toBe('-ERR Too many commands before login, closing connection');
    await c.waitClosed();
  });

  it('closes a connection that has not logged in within the login timeout, not one that has', async () => {
    const { port } = await start({ 'limits.loginTimeout': '200ms' });
    const idle = await connect(port);
    const user = await connect(port);
    await login(user);
    expect(await idle.line(1000)).toBe('-ERR Login timeout, closing connection');
    await idle.waitClosed();
    await new Promise((r) => setTimeout(r, 100));
    expect(await user.send('NOOP')).toBe('+OK');
    user.destroy();
  });

  it('survives clients that vanish mid-command, mid-login and mid-delay, and leaks no session', async () => {
    const { port } = await start({ 'auth.failureDelay': '50ms' });
    const partial = await connect(port);
    partial.write(`USER ${ALICE}\r\nPASS ${aliceKey.slice(0, 10)}`);
    partial.destroy();
    const midLogin = await connect(port);
    midLogin.write(`USER ${ALICE}\r\nPASS ${aliceKey}\r\nSTAT\r\n`);
    midLogin.destroy();
    const midDelay = await connect(port);
    midDelay.write(`USER ${ALICE}\r\nPASS ${generateKey()}\r\n`);
    await new Promise((r) => setTimeout(r, 20));
    midDelay.destroy();
    await new Promise((r) => setTimeout(r, 150));
    expect(kg.sessions.count('pop3')).toBe(0);
    const c = await connect(port);
    await login(c);
    c.destroy();
  });

  it('refuses connections over the per-IP limit', async () => {
    const { port } = await start({ 'limits.connectionsPerIp': '2' });
    const a = await connect(port);
    const b = await connect(port);
    const c = await LineClient.connect(port);
    expect(await c.line()).toBe('-ERR [SYS/TEMP] Too many connections from your address, try again later');
    await c.waitClosed();
    a.destroy();
    b.destroy();
  });
});

describe('POP3 live sessions', () => {
  it('ends a session within 1 s when its key is revoked', async () => {
    const { port } = await start();
    const k = await h.issue(ALICE, ['pop3']);
    const c = await connect(port);
    await login(c, ALICE, k.key);
    const t0 = Date.now();
    await h.store.revokeKey(k.id, new Date().toISOString());
    expect(await c.line(1000)).toBe('-ERR [SYS/TEMP] Session ended: key revoked');
    await c.waitClosed(1000);
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('ends a session when its key expires or its account is disabled', async () => {
    const { port } = await start();
    const soon = await h.issue(ALICE, ['pop3'], { expiresAt: new Date(Date.now() + 700).toISOString() });
    const a = await connect(port);
    await login(a, ALICE, soon.key);
    expect(await a.line(2000)).toBe('-ERR [SYS/TEMP] Session ended: key expired');
    await a.waitClosed(1000);

    const carol = await h.issue('carol@example.com', ['pop3']);
    const b = await connect(port);
    await login(b, 'carol@example.com', carol.key);
    await h.store.updateAccount('carol@example.com', { disabled: true });
    expect(await b.line(1000)).toBe('-ERR [SYS/TEMP] Session ended: account disabled');
    await b.waitClosed(1000);
  });

  it('says goodbye to open sessions when the listener shuts down', async () => {
    const { port } = await start();
    const c = await connect(port);
    await login(c);
    const closing = kg.close();
    expect(await c.line(2000)).toBe('-ERR [SYS/TEMP] Session ended: server shutting down');
    await c.waitClosed(2000);
    await closing;
  });

  it('at shutdown, idle sessions (openssl s_client, before and after login) hear goodbye at once, a busy one after its answer', async () => {
    const { port, securePort } = await start({ 'auth.failureDelay': '300ms' });
    const GOODBYE = '-ERR [SYS/TEMP] Session ended: server shutting down';
    /** A real client left idle: its whole output once the server has closed the connection. */
    const sClient = (args: string[], input: string, ready: string): { out: Promise<string>; ready: Promise<void> } => {
      const p = spawn('openssl', ['s_client', '-quiet', ...args], { stdio: ['pipe', 'pipe', 'ignore'] });
      p.stdin.on('error', () => {});
      let text = '';
      let markReady!: () => void;
      const isReady = new Promise<void>((r) => (markReady = r));
      p.stdout.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.includes(ready)) markReady();
      });
      if (input) p.stdin.write(input);
      const killer = setTimeout(() => p.kill(), 8000);
      return { out: new Promise((resolve) => p.on('close', () => (clearTimeout(killer), resolve(text)))), ready: isReady };
    };
    const idle = sClient(['-connect', `127.0.0.1:${port}`, '-starttls', 'pop3'], 'CAPA\r\n', 'USER');
    const loggedIn = sClient(['-connect', `127.0.0.1:${securePort}`], `USER ${ALICE}\r\nPASS ${aliceKey}\r\n`, '+OK Logged in');
    await Promise.all([idle.ready, loggedIn.ready]);
    const busy = await connect(port);
    busy.write(`USER ${ALICE}\r\nPASS wrong\r\n`);
    expect(await busy.line()).toMatch(/^\+OK/);
    await waitFor(() => kg.sessions.count('pop3') === 1);
    const started = Date.now();
    await kg.close(5000);
    // Well within the 5 s grace: nobody was left to wait for.
    expect(Date.now() - started).toBeLessThan(2000);
    const lastLines = async (out: Promise<string>, n: number): Promise<string[]> => (await out).trimEnd().split(/\r?\n/).slice(-n);
    expect(await lastLines(idle.out, 2)).toEqual(['.', GOODBYE]);
    expect(await lastLines(loggedIn.out, 2)).toEqual(['+OK Logged in', GOODBYE]);
    expect(await busy.rest()).toBe(`${AUTH_FAILED}\r\n${GOODBYE}\r\n`);
  });
});

describe('POP3 with a backend', () => {
  let upstream: net.Server;
  let upstreamPort: number;
  const upstreamSockets = new Set<net.Socket>();
  const BIG = 'x'.repeat(76) + '\r\n';

  beforeAll(async () => {
    upstream = net.createServer((s) => {
      upstreamSockets.add(s);
      s.on('close', () => upstreamSockets.delete(s));
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString();
        let i;
        while ((i = buf.indexOf('\r\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (line === 'STAT') s.write('+OK 2 320\r\n');
          else if (line === 'RETR 1') s.write(`+OK message follows\r\n${BIG.repeat(20_000)}.\r\n`);
          else if (line === 'QUIT') s.end('+OK upstream bye\r\n');
          else s.write('-ERR upstream does not know that\r\n');
        }
      });
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    upstreamPort = (upstream.address() as net.AddressInfo).port;
  });

  afterAll(async () => {
    for (const s of upstreamSockets) s.destroy();
    await new Promise((r) => upstream.close(r));
  });

  function backend(opened: SessionContext[]): Backends {
    const pop3: Backend<PipeSession> = {
      async open(ctx) {
        opened.push(ctx);
        const socket = net.connect(upstreamPort, '127.0.0.1');
        await once(socket, 'connect');
        return { socket, relay: (sink) => void socket.on('data', sink), close: () => socket.destroy() };
      },
    };
    return { imap: null, pop3, smtp: null };
  }

  it('pipes the session to the backend after +OK, including commands pipelined behind PASS', async () => {
    const opened: SessionContext[] = [];
    const { port } = await start({}, backend(opened));
    const c = await connect(port);
    c.write(`USER al@example.com\r\nPASS ${aliceKey}\r\nSTAT\r\n`);
    expect(await c.line()).toMatch(/^\+OK/);
    expect(await c.line()).toBe('+OK Logged in');
    expect(await c.line()).toBe('+OK 2 320');
    expect(opened).toHaveLength(1);
    expect(opened[0]).toMatchObject({ protocol: 'pop3', clientIp: '127.0.0.1', secure: false });
    expect(opened[0]!.account.address).toBe(ALICE);

    c.write('RETR 1\r\n');
    expect(await c.line()).toBe('+OK message follows');
    let n = 0;
    for (let l = await c.line(); l !== '.'; l = await c.line()) {
      expect(l).toHaveLength(76);
      n++;
    }
    expect(n).toBe(20_000);
    expect(await c.send('QUIT')).toBe('+OK upstream bye');
    await c.waitClosed();
  });

  it('ends the piped session and the upstream connection on revocation', async () => {
    const { port } = await start({}, backend([]));
    const k = await h.issue(ALICE, ['pop3']);
    const c = await connect(port);
    await login(c, ALICE, k.key);
    expect(await c.send('STAT')).toBe('+OK 2 320');
    expect(upstreamSockets.size).toBe(1);
    await h.store.revokeKey(k.id, new Date().toISOString());
    expect(await c.line(1000)).toBe('-ERR [SYS/TEMP] Session ended: key revoked');
    await c.waitClosed(1000);
    await waitFor(() => upstreamSockets.size === 0);
  });

  it('after the upstream says goodbye, closes a client that keeps its side open, freeing its per-IP slot', async () => {
    const { port } = await start({ 'limits.connectionsPerIp': '1' }, backend([]));
    // A client that never half-closes on its own: the server has to end the connection.
    const raw = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let text = '';
    raw.on('data', (d: Buffer) => (text += d.toString()));
    const ended = once(raw, 'end');
    await waitFor(() => text.includes('+OK Keygate ready\r\n'));
    raw.write(`USER ${ALICE}\r\nPASS ${aliceKey}\r\nQUIT\r\n`);
    await ended;
    expect(text).toMatch(/\+OK Logged in\r\n\+OK upstream bye\r\n$/);
    await waitFor(() => upstreamSockets.size === 0);
    // The slot comes back once Keygate has let go of the lingering client (1 s).
    let greeting = '';
    for (const deadline = Date.now() + 3000; greeting !== '+OK Keygate ready' && Date.now() < deadline; ) {
      const c = await LineClient.connect(port);
      greeting = await c.line();
      c.destroy();
      if (greeting !== '+OK Keygate ready') await new Promise((r) => setTimeout(r, 100));
    }
    expect(greeting).toBe('+OK Keygate ready');
    raw.destroy();
  });

  it('a client that half-closes after its last command still gets every reply', async () => {
    const { port } = await start({}, backend([]));
    for (const pipelined of [false, true]) {
      const raw = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      let text = '';
      raw.on('data', (d: Buffer) => (text += d.toString()));
      const closed = once(raw, 'close');
      await waitFor(() => text.includes('+OK Keygate ready\r\n'));
      if (pipelined) {
        // printf '…' | nc -N: everything at once, then FIN.
        raw.end(`USER ${ALICE}\r\nPASS ${aliceKey}\r\nSTAT\r\nQUIT\r\n`);
      } else {
        raw.write(`USER ${ALICE}\r\nPASS ${aliceKey}\r\n`);
        await waitFor(() => text.includes('+OK Logged in'));
        raw.end('STAT\r\nQUIT\r\n');
      }
      await closed;
      expect(text, pipelined ? 'pipelined' : 'after login').toMatch(/\+OK Logged in\r\n\+OK 2 320\r\n\+OK upstream bye\r\n$/);
    }
    await waitFor(() => upstreamSockets.size === 0);
  });

  it('answers what a client sent before its FIN without a backend too, then closes', async () => {
    const { port } = await start();
    const raw = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let text = '';
    raw.on('data', (d: Buffer) => (text += d.toString()));
    const closed = once(raw, 'close');
    raw.end(`CAPA\r\nUSER ${ALICE}\r\nPASS ${aliceKey}\r\n`);
    await closed;
    expect(text).toMatch(/\r\n\.\r\n\+OK[^\r]*\r\n\+OK Logged in\r\n$/);
  });

  it('answers -ERR [SYS/TEMP] when the backend is unavailable, and QUIT still works', async () => {
    const pop3: Backend<PipeSession> = {
      async open() {
        throw new BackendUnavailableError('upstream down');
      },
    };
    const { port } = await start({}, { imap: null, pop3, smtp: null });
    const c = await connect(port);
    expect(await c.send(`USER ${ALICE}`)).toMatch(/^\+OK/);
    expect(await c.send(`PASS ${aliceKey}`)).toBe('-ERR [SYS/TEMP] Mailbox temporarily unavailable, try again later');
    expect(kg.sessions.count('pop3')).toBe(0);
    expect(await c.send('QUIT')).toBe('+OK Bye');
    await c.waitClosed();
  });
});
