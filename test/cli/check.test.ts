import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSelfSignedCertificate } from '../../src/tls/selfsigned.js';
import { builtCliAvailable, runCli, type CliResult } from '../helpers/cli.js';
import { freePort } from '../helpers/free-port.js';
import { DOVECOT_SKIP_REASON, dovecotAvailable, startShippedDovecot, type RunningDovecot } from '../helpers/dovecot.js';

/*
 * Issue 13, item 6: `keygate check` against a good configuration (a private
 * Dovecot from the shipped configuration, a certificate for the host name, a
 * SQLite store with an account) and broken ones: a wrong upstream port, a
 * wrong master password, an expired, nearly expired or mismatched
 * certificate, an unreachable Redis. One line per check; exit 1 on any failure.
 */

const HOST = 'mail.example.test';
const DAY = 86_400_000;
const dir = mkdtempSync(join(tmpdir(), 'keygate-check-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A certificate pair for `host` made as if on `madeAt` (valid 730 days from then), written to files. */
async function certFiles(name: string, host: string, madeAt = new Date()): Promise<{ cert: string; key: string }> {
  const pair = await createSelfSignedCertificate(host, madeAt);
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  writeFileSync(cert, pair.certPem);
  writeFileSync(key, pair.keyPem, { mode: 0o600 });
  return { cert, key };
}

function lines(r: CliResult): string[] {
  return r.stdout.trimEnd().split('\n');
}

const line = (r: CliResult, name: string): string => lines(r).find((l) => l.includes(` ${name}: `)) ?? `(no ${name} line in:\n${r.stdout}${r.stderr})`;

describe.skipIf(!builtCliAvailable() || !dovecotAvailable())('keygate check', () => {
  let dovecot: RunningDovecot;
  let home: string;
  let good: Record<string, string>;

  beforeAll(async () => {
    dovecot = await startShippedDovecot();
    home = join(dir, 'home');
    mkdirSync(home);
    const { cert, key } = await certFiles('good', HOST);
    good = {
      KEYGATE_HOME: home,
      KEYGATE_HOSTNAME: HOST,
      KEYGATE_TLS_CERT: cert,
      KEYGATE_TLS_KEY: key,
      KEYGATE_UPSTREAM_IMAP_HOST: dovecot.host,
      KEYGATE_UPSTREAM_IMAP_PORT: String(dovecot.imapPort),
      KEYGATE_UPSTREAM_IMAP_TLS: 'starttls',
      KEYGATE_UPSTREAM_IMAP_VERIFY_CERT: 'false',
      KEYGATE_UPSTREAM_POP3_HOST: dovecot.host,
      KEYGATE_UPSTREAM_POP3_PORT: String(dovecot.pop3Port),
      KEYGATE_UPSTREAM_POP3_TLS: 'starttls',
      KEYGATE_UPSTREAM_POP3_VERIFY_CERT: 'false',
      KEYGATE_UPSTREAM_SMTP_HOST: dovecot.host,
      KEYGATE_UPSTREAM_SMTP_PORT: String(dovecot.lmtpPort),
      KEYGATE_UPSTREAM_SMTP_TLS: 'none',
      KEYGATE_UPSTREAM_SMTP_LOGIN: 'lmtp',
      KEYGATE_UPSTREAM_MASTER_USER: dovecot.master.user,
      KEYGATE_UPSTREAM_MASTER_PASSWORD: dovecot.master.password,
      KEYGATE_UPSTREAM_CONNECT_TIMEOUT: '3s',
    };
    // An account with a key: the one the upstream logins are tried for.
    expect((await runCli(['tokens', 'issue', '-d', 'ann', '-s', 'app', '-a', 'ann@example.com'], good)).code).toBe(0);
  });
  afterAll(async () => {
    await dovecot?.stop();
  });

  it('a good configuration: one ok line per check, exit 0', async () => {
    const r = await runCli(['check'], good);
    expect(r.stderr).toBe('');
    expect(lines(r)).toEqual([
      `ok    store: sqlite:${join(home, 'data', 'keygate.db')} answers (1 account)`,
      expect.stringMatching(new RegExp(`^ok    certificate: ${join(dir, 'good.crt')} for ${HOST.replace(/\./g, '\\.')}, valid until \\S+ \\(72\\d days\\)$`)),
      `ok    imap upstream: 127.0.0.1:${dovecot.imapPort} (starttls): master login as ann@example.com accepted`,
      `ok    pop3 upstream: 127.0.0.1:${dovecot.pop3Port} (starttls): master login as ann@example.com accepted`,
      `ok    smtp upstream: 127.0.0.1:${dovecot.lmtpPort} (LMTP): LMTP greeting accepted`,
    ]);
    expect(r.code).toBe(0);
    // Dovecot saw the master logins.
    expect(dovecot.logTail(40)).toMatch(/imap-login: Info: Login: user=<ann@example\.com>, method=PLAIN, .*TLS/);
    expect(dovecot.logTail(40)).toMatch(/pop3-login: Info: Login: user=<ann@example\.com>, method=PLAIN, .*TLS/);
  });

  it('a wrong upstream port: that upstream fails, the others are ok; exit 1', async () => {
    const closed = await freePort();
    const r = await runCli(['check'], { ...good, KEYGATE_UPSTREAM_IMAP_PORT: String(closed) });
    expect(r.code).toBe(1);
    expect(line(r, 'imap upstream')).toMatch(new RegExp(`^FAIL  imap upstream: 127\\.0\\.0\\.1:${closed} \\(starttls\\): master login as ann@example\\.com failed: connect to 127\\.0\\.0\\.1:${closed} failed: .*ECONNREFUSED`));
    expect(line(r, 'pop3 upstream')).toMatch(/^ok /);
    expect(lines(r)).toHaveLength(5);
  });

  it('a wrong master password: IMAP and POP3 logins fail, never showing the password; exit 1', async () => {
    const wrong = `wrong-${dovecot.master.password}`;
    const r = await runCli(['check'], { ...good, KEYGATE_UPSTREAM_MASTER_PASSWORD: wrong });
    expect(r.code).toBe(1);
    expect(line(r, 'imap upstream')).toMatch(/^FAIL  imap upstream: .*master login as ann@example\.com failed: .*(refused|NO)/);
    expect(line(r, 'pop3 upstream')).toMatch(/^FAIL  pop3 upstream: .*master login as ann@example\.com failed: /);
    expect(line(r, 'smtp upstream')).toMatch(/^ok /); // LMTP needs no login
    expect(r.stdout + r.stderr).not.toContain(wrong);
  });

  it.each([
    ['expired', () => certFiles('expired', HOST, new Date(Date.now() - 800 * DAY)), /^FAIL  certificate: .*expired\.crt expired on /],
    ['nearly expired', () => certFiles('soon', HOST, new Date(Date.now() - 725 * DAY)), /^FAIL  certificate: .*soon\.crt expires in [45] day\(s\), on .*: renew it$/],
    ['for another name', () => certFiles('other', 'other.example.test'), /^FAIL  certificate: .*other\.crt is not valid for mail\.example\.test \(it names DNS:other\.example\.test/],
    ['with a key of another certificate', async () => ({ cert: (await certFiles('pair-a', HOST)).cert, key: (await certFiles('pair-b', HOST)).key }), /^FAIL  certificate: tls\.key .*pair-b\.key is not the key of .*pair-a\.crt$/],
  ])('a certificate %s fails; exit 1', async (_name, make, pattern) => {
    const { cert, key } = await make();
    const r = await runCli(['check'], { ...good, KEYGATE_TLS_CERT: cert, KEYGATE_TLS_KEY: key });
    expect(r.code).toBe(1);
    expect(line(r, 'certificate')).toMatch(pattern);
    expect(line(r, 'store')).toMatch(/^ok /);
  });

  it('an unreachable Redis store fails; with --account the upstreams are still tried; exit 1', async () => {
    const port = await freePort();
    const r = await runCli(['check', '--account', 'ann@example.com'], { ...good, KEYGATE_REDIS_URL: `redis://:redis-pw@127.0.0.1:${port}` });
    expect(r.code).toBe(1);
    expect(line(r, 'store')).toMatch(new RegExp(`^FAIL  store: redis 127\\.0\\.0\\.1:${port}: .*`));
    expect(line(r, 'imap upstream')).toMatch(/^ok /);
    expect(r.stdout + r.stderr).not.toContain('redis-pw');
  });

  it('without an account to log in as, upstream logins are skipped (not failed), saying how to name one', async () => {
    const empty = join(dir, 'empty-home');
    mkdirSync(empty);
    const r = await runCli(['check'], { ...good, KEYGATE_HOME: empty });
    expect(r.code).toBe(0);
    expect(line(r, 'store')).toMatch(/^ok    store: sqlite .*does not exist yet/);
    expect(line(r, 'imap upstream')).toMatch(/^skip  imap upstream: 127\.0\.0\.1:\d+ \(starttls\): login not tried, no stored account uses it; give --account ADDRESS$/);
    // check writes nothing: no store, no certificate.
    expect(readdirSync(empty)).toEqual([]);
  });

  it('a route that cannot be built (no master password) fails once per cause', async () => {
    const { KEYGATE_UPSTREAM_MASTER_PASSWORD: _dropped, ...rest } = good;
    const r = await runCli(['check'], rest);
    expect(r.code).toBe(1);
    expect(lines(r).filter((l) => l.startsWith('FAIL  imap upstream: no master user configured'))).toHaveLength(1);
  });
});

if (!dovecotAvailable()) it.skip(`keygate check against a real Dovecot: ${DOVECOT_SKIP_REASON}`, () => {});
