import { spawn, spawnSync } from 'node:child_process';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SingleKeygate, startKeygate } from '../../helpers/keygate.js';
import { LineClient, proxyV1 } from '../../helpers/line-client.js';

const ACCOUNT = 'alice@example.com';

let h: SingleKeygate;
let key: string;

beforeAll(async () => {
  // Trace level: the server logs each command it gets, so a test can prove which login the client used.
  h = await startKeygate({ flags: { 'auth.failureDelay': '10ms', 'log.level': 'trace' } });
  ({ key } = await h.issue(ACCOUNT, ['imap']));
});
afterAll(() => h.close());

/** The commands the server received while `fn` ran (tags stripped), as its trace log shows them. */
async function commandsDuring(fn: () => Promise<unknown>): Promise<string[]> {
  const from = h.logs.length;
  await fn();
  return h.logs
    .slice(from)
    .filter((l) => l.msg === 'IMAP command')
    .map((l) => (l as { command: string }).command.replace(/^\S+ /, ''));
}

/** The login commands among them: LOGIN, or AUTHENTICATE with its mechanism. */
const logins = (commands: string[]): string[] => commands.filter((c) => /^(LOGIN|AUTHENTICATE) /.test(c)).map((c) => c.split(' ').slice(0, c.startsWith('LOGIN') ? 1 : 2).join(' '));

function client(options: Partial<ConstructorParameters<typeof ImapFlow>[0]> & { auth: { user: string; pass: string; loginMethod?: string } }): ImapFlow {
  return new ImapFlow({
    host: '127.0.0.1',
    port: h.port('imaps'),
    secure: true,
    tls: { rejectUnauthorized: false },
    logger: false,
    verifyOnly: true,
    disableCompression: true,
    connectionTimeout: 5000,
    greetingTimeout: 5000,
    ...options,
  } as ConstructorParameters<typeof ImapFlow>[0]);
}

describe('imapflow', () => {
  it('logs in with LOGIN over implicit TLS', async () => {
    const c = client({ auth: { user: ACCOUNT, pass: key, loginMethod: 'LOGIN' } });
    expect(logins(await commandsDuring(() => c.connect()))).toEqual(['LOGIN']);
    expect(c.authenticated).toBeTruthy();
    expect(h.audits().at(-1)).toMatchObject({ protocol: 'imap', result: 'success', account: ACCOUNT });
  });

  it('logs in with AUTHENTICATE PLAIN after STARTTLS', async () => {
    const c = client({ port: h.port('imap'), secure: false, doSTARTTLS: true, auth: { user: ACCOUNT, pass: key, loginMethod: 'AUTH=PLAIN' } });
    const commands = await commandsDuring(() => c.connect());
    expect(c.secureConnection).toBe(true);
    expect(c.authenticated).toBeTruthy();
    // imapflow falls back to LOGIN without a word when it sees no AUTH=PLAIN: the server saw PLAIN, after STARTTLS.
    expect(logins(commands)).toEqual(['AUTHENTICATE PLAIN']);
    expect(commands.indexOf('STARTTLS')).toBeLessThan(commands.indexOf('AUTHENTICATE PLAIN'));
    expect(h.audits().at(-1)).toMatchObject({ protocol: 'imap', result: 'success', account: ACCOUNT });
  });

  it('logs in with AUTHENTICATE LOGIN', async () => {
    const c = client({ auth: { user: ACCOUNT, pass: key, loginMethod: 'AUTH=LOGIN' } });
    expect(logins(await commandsDuring(() => c.connect()))).toEqual(['AUTHENTICATE LOGIN']);
    expect(c.authenticated).toBeTruthy();
  });

  it('never logs the key, in any encoding, even at trace level', () => {
    const logged = JSON.stringify(h.logs);
    expect(h.logs.some((l) => l.msg === 'IMAP command')).toBe(true);
    for (const secret of [key, Buffer.from(key).toString('base64'), Buffer.from(`\0${ACCOUNT}\0${key}`).toString('base64')]) expect(logged).not.toContain(secret);
  });

  it('reports an authentication failure for a wrong key', async () => {
    const c = client({ auth: { user: ACCOUNT, pass: `${key.slice(0, -4)}AAAA` } });
    const err = await c.connect().then(
      () => null,
      (e: unknown) => e as { authenticationFailed?: boolean; serverResponseCode?: string },
    );
    expect(err).toMatchObject({ authenticationFailed: true, serverResponseCode: 'AUTHENTICATIONFAILED' });
  });

  it('stays connected after login and logs out cleanly', async () => {
    const c = client({ verifyOnly: false, disableAutoIdle: true, auth: { user: ACCOUNT, pass: key } } as never);
    await c.connect();
    expect(h.sessions.count('imap')).toBeGreaterThanOrEqual(1);
    const opened = await c.mailboxOpen('INBOX').then(
      () => 'opened',
      (e: unknown) => (e as { responseText?: string }).responseText ?? String(e),
    );
    expect(opened).toContain('No mailbox backend is configured');
    await c.logout();
  });
});

const haveOpenssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

/** Runs `openssl s_client -starttls imap`, sends `input` once TLS is up, returns what it printed. */
function sClient(port: number, input: string[], extra: string[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', ['s_client', '-starttls', 'imap', '-connect', `127.0.0.1:${port}`, '-quiet', '-ign_eof', ...extra], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let sent = false;
    // s_client may exit (refused handshake) before we write: that EPIPE is the expected outcome.
    child.stdin.on('error', () => {});
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      out += d;
      if (!sent && out.includes('\n')) {
        sent = true;
        // s_client has done STARTTLS and the handshake; it shows us nothing of the plaintext part.
        child.stdin.write(input.map((l) => `${l}\r\n`).join(''));
      }
    });
    // -quiet swallows the post-handshake greeting on some builds: nudge with our first line.
    child.stderr.on('data', () => {
      if (!sent) {
        sent = true;
        child.stdin.write(input.map((l) => `${l}\r\n`).join(''));
      }
    });
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`openssl s_client timed out; output: ${out}`));
    }, 10_000);
    child.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
    child.on('error', reject);
  });
}

describe.skipIf(!haveOpenssl)('openssl s_client -starttls imap', () => {
  it('upgrades, then logs in and out', async () => {
    const out = await sClient(h.port('imap'), [`a LOGIN ${ACCOUNT} ${key}`, 'b LOGOUT']);
    expect(out).toContain('a OK [CAPABILITY IMAP4rev1 ID LITERAL+] Logged in');
    expect(out).toContain('* BYE Logging out');
    expect(out).toContain('b OK LOGOUT completed');
  });

  it('negotiates TLS 1.2 or better and refuses TLS 1.1', async () => {
    const out = await sClient(h.port('imap'), ['a CAPABILITY', 'b LOGOUT'], ['-tls1_2']);
    expect(out).toContain('AUTH=PLAIN');
    const old = await sClient(h.port('imap'), ['a LOGOUT'], ['-tls1_1']).catch((e: Error) => e.message);
    expect(old).not.toContain('a OK');
  });
});

describe('STARTTLS bookkeeping', () => {
  it('a STARTTLS session that closes is no longer counted by its listener', async () => {
    const p = await startKeygate({ flags: { proxyProtocol: true, 'limits.connectionsPerIp': 1 } });
    try {
      for (let i = 0; i < 3; i++) {
        // With a per-IP limit of 1, each new connection only gets in if the previous one was forgotten.
        const c = await LineClient.connect(p.port('imap'), { prefix: proxyV1('203.0.113.50') });
        expect(await c.line()).toMatch(/^\* OK /);
        expect(await c.command('a', 'STARTTLS')).toBe('a OK Begin TLS negotiation now');
        await c.upgrade();
        expect(await c.command('b', 'LOGOUT')).toBe('b OK LOGOUT completed');
        await c.closed;
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      await p.close();
    }
  });
});
