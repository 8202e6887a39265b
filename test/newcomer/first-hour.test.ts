import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { knownEnvVars } from '../../src/config.js';
import { builtCliAvailable, ROOT, runCli, startServe, type ServeProcess } from '../helpers/cli.js';
import { composeEnvironments } from '../deploy/compose.js';
import { dovecotAvailable, startDovecot, type RunningDovecot } from '../helpers/dovecot.js';
import { freePort } from '../helpers/free-port.js';
import { TEST_CERT_DIR } from '../helpers/keygate.js';
import { LineClient, plain } from '../helpers/line-client.js';

/*
 * Issue 13, "done when": the newcomer's path, replayed. The eleven things a
 * new user hit, in the order, each as that user meets it: the built
 * `keygate` command, a `keygate serve` process, real sockets. Each `it`
 * names its point; what it asserts is what now holds instead.
 */

const ALICE = 'alice@example.com';

type Listener = 'http' | 'smtp' | 'smtps' | 'imap' | 'imaps' | 'pop3' | 'pop3s';

/** Seven distinct free ports for the listeners, and the settings that move them there. */
async function listenerPorts(): Promise<{ port: Record<Listener, number>; env: Record<string, string> }> {
  const free = new Set<number>();
  while (free.size < 7) free.add(await freePort());
  const [http, smtp, smtps, imap, imaps, pop3, pop3s] = [...free] as [number, number, number, number, number, number, number];
  const env = { HTTP_PORT: http, SMTP_PORT: smtp, SMTP_SECURE_PORT: smtps, IMAP_PORT: imap, IMAP_SECURE_PORT: imaps, POP3_PORT: pop3, POP3_SECURE_PORT: pop3s };
  return { port: { http, smtp, smtps, imap, imaps, pop3, pop3s }, env: Object.fromEntries(Object.entries(env).map(([k, v]) => [`KEYGATE_${k}`, String(v)])) };
}

describe.skipIf(!builtCliAvailable() || !dovecotAvailable())('the first hour, replayed (issue 13)', () => {
  let dir: string;
  let home: string;
  let dovecot: RunningDovecot;
  let serve: ServeProcess;
  let env: Record<string, string>;
  let port: Record<Listener, number>;
  let admin: string;
  let key: string;
  const api = (path: string, init: RequestInit = {}, bearer = admin): Promise<Response> =>
    fetch(`http://127.0.0.1:${port.http}${path}`, { ...init, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json', ...init.headers } });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-newcomer-'));
    home = join(dir, 'home');
    mkdirSync(home);
    dovecot = await startDovecot();
    const listeners = await listenerPorts();
    port = listeners.port;
    // No upstream at all, as after `npm start`; a master user for the routes given later; IMAP moved (point 4)
    // and advertised on purpose (public.imap.enabled), POP3 and SMTP left to what Keygate knows.
    env = {
      KEYGATE_HOME: home,
      KEYGATE_TLS_DIR: TEST_CERT_DIR,
      KEYGATE_AUTH_FAILURE_DELAY: '10ms',
      ...listeners.env,
      KEYGATE_PUBLIC_IMAP_ENABLED: 'true',
      KEYGATE_UPSTREAM_MASTER_USER: dovecot.master.user,
      KEYGATE_UPSTREAM_MASTER_PASSWORD: dovecot.master.password,
    };
    admin = (await runCli(['tokens', 'issue', '-d', 'Admin', '-s', '*'], env)).stdout.trim();
    key = (await runCli(['tokens', 'issue', '-d', "Alice's laptop", '-s', 'app', '-a', ALICE], env)).stdout.trim();
    expect(key).toMatch(/^kg_/);
    serve = startServe([], env);
    await serve.waitForLine(/Keygate started/, 20_000);
  });

  afterAll(async () => {
    await serve?.stop();
    await dovecot?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('1. no upstream: said at start-up, logins refused plainly, SMTP refused at MAIL FROM, nothing advertised', async () => {
    const warnings = serve.lines.filter((l) => /no (IMAP|POP3|SMTP) upstream is configured/.test(l));
    expect(warnings).toHaveLength(3);
    expect(warnings.every((l) => /"level":40/.test(l))).toBe(true);

    const imap = await LineClient.connect(port.imap);
    await imap.line();
    expect(await imap.command('a', `LOGIN ${ALICE} ${key}`)).toBe('a NO [UNAVAILABLE] No mailbox is configured for this account');
    imap.destroy();

    const pop3 = await LineClient.connect(port.pop3);
    await pop3.line();
    expect(await pop3.send(`USER ${ALICE}`)).toMatch(/^\+OK/);
    expect(await pop3.send(`PASS ${key}`)).toBe('-ERR [SYS/PERM] No mailbox is configured for this account');
    pop3.destroy();

    const smtp = await LineClient.connect(port.smtp);
    await smtp.reply();
    smtp.write('EHLO newcomer\r\n');
    await smtp.reply();
    smtp.write(`AUTH PLAIN ${plain(ALICE, key)}\r\n`);
    expect((await smtp.reply())[0]).toMatch(/^235 /);
    smtp.write(`MAIL FROM:<${ALICE}>\r\n`);
    // Permanent, and before the client sends a single byte of the message.
    expect((await smtp.reply())[0]).toBe(`554 5.3.5 No outgoing mail server is configured for ${ALICE}`);
    smtp.destroy();

    const info = (await (await api('/api/smtp-credentials', {}, key)).json()) as { connectionInfo: Record<'smtp' | 'imap' | 'pop3', { enabled: boolean }> };
    expect(info.connectionInfo.smtp.enabled).toBe(false);
    expect(info.connectionInfo.pop3.enabled).toBe(false);
    // public.imap.enabled set on purpose: still offered.
    expect(info.connectionInfo.imap.enabled).toBe(true);
    const autoconfig = await (await fetch(`http://127.0.0.1:${port.http}/mail/config-v1.1.xml?emailaddress=${ALICE}`)).text();
    expect(autoconfig).toContain('<incomingServer type="imap">');
    expect(autoconfig).not.toContain('type="pop3"');
    expect(autoconfig).not.toContain('<outgoingServer');
  });

  it('2. a route of the account\'s own works at its next login: no default, no restart', async () => {
    const route = {
      imap: { host: dovecot.host, port: dovecot.imapPort, tls: 'none' },
      smtp: { host: dovecot.host, port: dovecot.lmtpPort, tls: 'none', login: 'lmtp' },
    };
    expect((await api(`/api/accounts/${ALICE}/upstream`, { method: 'PUT', body: JSON.stringify(route) })).status).toBe(200);

    const imap = await LineClient.connect(port.imap);
    await imap.line();
    expect(await imap.command('a', `LOGIN ${ALICE} ${key}`)).toMatch(/^a OK /);
    expect(await imap.command('b', 'SELECT INBOX')).toMatch(/^b OK /);
    imap.destroy();

    const smtp = await LineClient.connect(port.smtp);
    await smtp.reply();
    smtp.write('EHLO newcomer\r\n');
    await smtp.reply();
    smtp.write(`AUTH PLAIN ${plain(ALICE, key)}\r\n`);
    await smtp.reply();
    for (const [line, code] of [[`MAIL FROM:<${ALICE}>`, '250'], [`RCPT TO:<${ALICE}>`, '250'], ['DATA', '354'], ['Subject: routed\r\n\r\nno restart needed\r\n.', '250']] as const) {
      smtp.write(`${line}\r\n`);
      expect((await smtp.reply())[0]!.slice(0, 3), line).toBe(code);
    }
    smtp.destroy();
    expect(readdirSync(join(dovecot.dir, 'mail', ALICE, 'new'))).toHaveLength(1);
  });

  it('3. docker-compose wires Keygate to its Dovecot with settings that exist', () => {
    const { envs } = composeEnvironments();
    const keygate = envs.keygate!;
    const known = new Set(knownEnvVars());
    expect(Object.keys(keygate).filter((k) => k.startsWith('KEYGATE_') && !known.has(k))).toEqual([]);
    for (const p of ['IMAP', 'POP3', 'SMTP']) expect(keygate[`KEYGATE_UPSTREAM_${p}_HOST`], p).toBe('dovecot');
    expect(keygate.KEYGATE_UPSTREAM_MASTER_USER).toBe('keygate');
  });

  it('4. clients are told the port the listener moved to', async () => {
    const autoconfig = await (await fetch(`http://127.0.0.1:${port.http}/mail/config-v1.1.xml?emailaddress=${ALICE}`)).text();
    expect(autoconfig).toContain(`<port>${port.imaps}</port>`);
    expect(autoconfig).not.toContain('<port>2993</port>');
  });

  it('5. the CLI run from elsewhere, or with a mistyped --db.path, invents no store', async () => {
    const elsewhere = join(dir, 'elsewhere');
    mkdirSync(elsewhere);
    const r = await runCli(['tokens', 'list'], {}, 20_000, elsewhere);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(new RegExp(`^keygate: no key store at ${join(elsewhere, 'data', 'keygate.db').replace(/[.]/g, '\\.')}`));
    const typo = await runCli(['tokens', 'list', '--db.path', join(dir, 'tpyo', 'keygate.db')], {});
    expect(typo.code).toBe(1);
    expect(existsSync(join(elsewhere, 'data'))).toBe(false);
    expect(existsSync(join(dir, 'tpyo'))).toBe(false);
    // With KEYGATE_HOME the server's store is found from anywhere.
    expect((await runCli(['tokens', 'list'], { KEYGATE_HOME: home }, 20_000, elsewhere)).stdout).toContain("Alice's laptop");
  });

  it('6. help lists every setting; a mistyped command gets a suggestion', async () => {
    const help = await runCli(['serve', '--help']);
    for (const s of ['--mailbox <value>', 'KEYGATE_MAILBOX', '--upstream.imap.host', 'KEYGATE_UPSTREAM_MASTER_PASSWORD']) expect(help.stdout).toContain(s);
    const typo = await runCli(['tokns', 'list']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('(did you mean tokens?)');
  });

  it('7. keygate check says what is wrong with an upstream, one line each, before a client finds out', async () => {
    const r = await runCli(['check', '--account', ALICE], { ...env, KEYGATE_UPSTREAM_MASTER_PASSWORD: 'not-the-master-password' });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^FAIL  imap upstream: .*\b(refused|AUTHENTICATIONFAILED)/m);
  });

  it('8. what Keygate and the recipes write in a checkout is git-ignored', () => {
    const files = ['data/keygate.db', 'data/mailbox/dovecot.conf', 'data/mailbox/mail/example.com/alice/Maildir/cur/1', 'certs/cert.pem', 'alice.mobileconfig', '.env'];
    const check = spawnSync('git', ['-C', ROOT, 'check-ignore', '--no-index', '--stdin'], { input: files.join('\n'), encoding: 'utf8' });
    expect(check.stdout.split('\n').filter(Boolean).sort()).toEqual([...files].sort());
  });

  it('9. a malformed prepared token exits 2, which systemd does not restart', async () => {
    const r = await runCli(['serve'], { ...env, KEYGATE_HOME: join(dir, 'fresh'), KEYGATE_PREPARED_TOKEN: 'not-a-token' });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('10. an unknown scope over REST is named once, as the CLI names it', async () => {
    const res = await api('/api/tokens', { method: 'POST', body: JSON.stringify({ description: 'x', scopes: ['bogus'] }) });
    expect(res.status).toBe(400);
    const { error } = (await res.json()) as { error: { message: string; details?: unknown[] } };
    expect(error.message).toMatch(/^unknown scope "bogus" \(known: /);
    expect(error.details ?? [error.message]).toHaveLength(1);
  });

  it('11. failed HTTP logins, HTTP latency and upstreams are in /metrics', async () => {
    expect((await api('/api/tokens', {}, 'kg_not-a-key')).status).toBe(401);
    const metricsKey = (await runCli(['tokens', 'issue', '-d', 'Prometheus', '-s', 'metrics'], env)).stdout.trim();
    const text = await (await api('/metrics', {}, metricsKey)).text();
    expect(text).toMatch(/^keygate_auth_attempts_total\{protocol="http",result="failure"\} [1-9]/m);
    expect(text).toMatch(/^keygate_http_request_duration_seconds_count\{route="\/api\/tokens",status_class="4xx"\} [1-9]/m);
    // Point 2's login and delivery connected upstream.
    expect(text).toMatch(/^keygate_upstream_connect_duration_seconds_count\{protocol="imap"\} [1-9]/m);
    expect(text).toMatch(/^keygate_upstream_connect_duration_seconds_count\{protocol="smtp"\} [1-9]/m);
    expect(text).toMatch(/^# TYPE keygate_upstream_failures_total counter$/m);
  });

  it('and a mailbox of its own without Dovecot stops at once, naming the packages', async () => {
    const r = await runCli(['serve', '--mailbox', 'local', '--mailboxDovecot', join(dir, 'no', 'dovecot')], { ...env, KEYGATE_HOME: join(dir, 'nodovecot') });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringContaining('sudo apt-get install dovecot-imapd dovecot-pop3d dovecot-lmtpd')]);
    // keygate check says the same beforehand, and that an installed Dovecot will do.
    const missing = await runCli(['check', '--mailbox', 'local', '--mailboxDovecot', join(dir, 'no', 'dovecot')], { KEYGATE_HOME: join(dir, 'nodovecot') });
    expect(missing.code).toBe(1);
    expect(missing.stdout).toMatch(/^FAIL  local mailbox: .*sudo apt-get install dovecot-imapd dovecot-pop3d dovecot-lmtpd/m);
    const present = await runCli(['check', '--mailbox', 'local'], { KEYGATE_HOME: join(dir, 'nodovecot') });
    expect(present.stdout).toMatch(/^ok    local mailbox: Dovecot 2\.\S+ \(\S+dovecot\) with IMAP, POP3 and LMTP; mail in /m);
    expect(present.code).toBe(0);
    expect(existsSync(join(dir, 'nodovecot', 'data', 'mailbox'))).toBe(false);
  });
});

interface AdvertisedServer {
  '@_type': string;
  port: number;
  socketType: 'SSL' | 'STARTTLS';
}

/** The servers Thunderbird would take from autoconfig, in its order: the first of each type. */
function advertised(xml: string): Record<'imap' | 'pop3' | 'smtp', AdvertisedServer | undefined> {
  const parsed = new XMLParser({ ignoreAttributes: false, isArray: (name) => name === 'incomingServer' || name === 'outgoingServer' }).parse(xml) as {
    clientConfig: { emailProvider: { incomingServer?: AdvertisedServer[]; outgoingServer?: AdvertisedServer[] } };
  };
  const all = [...(parsed.clientConfig.emailProvider.incomingServer ?? []), ...(parsed.clientConfig.emailProvider.outgoingServer ?? [])];
  const first = (type: string): AdvertisedServer | undefined => all.find((s) => s['@_type'] === type);
  return { imap: first('imap'), pop3: first('pop3'), smtp: first('smtp') };
}

/*
 * The working path the README opens with: `npm start -- --mailbox local`, one
 * key each, and Thunderbird (what it reads from autoconfig, then nodemailer and
 * imapflow on exactly those ports) sends and receives. Nothing else is set.
 */
describe.skipIf(!builtCliAvailable() || !dovecotAvailable())('the first hour, the working path: a mailbox of your own', () => {
  let home: string;
  let serve: ServeProcess;
  let env: Record<string, string>;
  let port: Record<Listener, number>;
  const keys: Record<string, string> = {};
  const BOB = 'bob@example.com';

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'keygate-newcomer-mailbox-'));
    // Run as root, the local mailbox keeps mail as the user `mail`, which must be able to enter the directory.
    chmodSync(home, 0o755);
    const listeners = await listenerPorts();
    port = listeners.port;
    env = { KEYGATE_HOME: home, KEYGATE_TLS_DIR: TEST_CERT_DIR, ...listeners.env };
    serve = startServe(['--mailbox', 'local'], env);
    await serve.waitForLine(/Keygate started/, 30_000);
    keys[ALICE] = (await runCli(['tokens', 'issue', '-n', "Alice's Thunderbird", '-s', 'app', '-a', ALICE], env)).stdout.trim();
    keys[BOB] = (await runCli(['tokens', 'issue', '-n', "Bob's phone", '-s', 'app', '-a', BOB], env)).stdout.trim();
  });

  afterAll(async () => {
    await serve?.stop();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  it('starts with every protocol routed: no warning, and the mail is under KEYGATE_HOME', () => {
    expect(serve.lines.filter((l) => /upstream is configured/.test(l))).toEqual([]);
    expect(serve.output()).toMatch(/local mailbox ready/);
    expect(existsSync(join(home, 'data', 'mailbox', 'dovecot.conf'))).toBe(true);
  });

  it('Thunderbird finds IMAP, POP3 and SMTP, sends to Bob, and Bob\'s reply comes back', async () => {
    const xml = await (await fetch(`http://127.0.0.1:${port.http}/mail/config-v1.1.xml?emailaddress=${ALICE}`)).text();
    const servers = advertised(xml);
    expect(servers.imap?.port).toBe(port.imaps);
    expect(servers.pop3?.port).toBe(port.pop3s);
    expect([port.smtps, port.smtp]).toContain(servers.smtp?.port);
    const { imap, smtp } = servers as Record<'imap' | 'smtp', AdvertisedServer>;

    // The self-signed certificate is accepted once, as Thunderbird asks the user to.
    const send = (from: string, to: string, subject: string) =>
      nodemailer
        .createTransport({ host: '127.0.0.1', port: smtp.port, secure: smtp.socketType === 'SSL', requireTLS: smtp.socketType === 'STARTTLS', tls: { rejectUnauthorized: false }, auth: { user: from, pass: keys[from]! }, logger: false })
        .sendMail({ from, to, subject, text: `${subject}, through Keygate.` });
    const subjects = async (user: string): Promise<string[]> => {
      const client = new ImapFlow({ host: '127.0.0.1', port: imap.port, secure: imap.socketType === 'SSL', tls: { rejectUnauthorized: false }, auth: { user, pass: keys[user]! }, logger: false });
      await client.connect();
      try {
        const lock = await client.getMailboxLock('INBOX');
        try {
          const out: string[] = [];
          for await (const m of client.fetch('1:*', { envelope: true })) out.push(m.envelope?.subject ?? '');
          return out;
        } finally {
          lock.release();
        }
      } finally {
        await client.logout();
      }
    };

    expect((await send(ALICE, BOB, 'Hello Bob')).accepted).toEqual([BOB]);
    expect(await subjects(BOB)).toEqual(['Hello Bob']);
    expect((await send(BOB, ALICE, 'Re: Hello Bob')).accepted).toEqual([ALICE]);
    expect(await subjects(ALICE)).toEqual(['Re: Hello Bob']);
  });
});
