import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { defaultText } from '../../src/cli/settings-help.js';
import { SPECS } from '../../src/config.js';
import { builtCliAvailable, runCli } from '../helpers/cli.js';

/*
 * Issue 13, item 6: help made from the settings table, "did you mean" for a
 * mistyped command, and `keygate config` with secrets masked.
 */

beforeAll(() => {
  if (!builtCliAvailable()) throw new Error('dist/cli.js is missing: run `npm run build` (npm test does it)');
});

describe('keygate serve --help', () => {
  let help: string;
  beforeAll(async () => {
    const r = await runCli(['serve', '--help']);
    expect(r.code).toBe(0);
    help = r.stdout;
  });

  it('lists every setting of the table with its flag, variable and default', () => {
    const plain = Object.entries(SPECS).filter(([, s]) => !s.secret);
    expect(plain.length).toBeGreaterThan(80);
    for (const [key, spec] of plain) {
      const line = help.split('\n').find((l) => l.trimStart().startsWith(`--${key} <value>`));
      expect(line, `--${key}`).toBeDefined();
      // Commander may wrap a long description: the rest of the entry follows on indented lines.
      const entry = help.slice(help.indexOf(line!)).split(/\n(?=\s{2}--|\n)/)[0]!.replace(/\s+/g, ' ');
      expect(entry, key).toContain(`[${spec.env}, default: ${defaultText(key)}]`);
    }
    expect(defaultText('auth.failureDelay')).toBe('1s');
    expect(defaultText('public.imap.securePort')).toBe('as imap.securePort');
    expect(defaultText('dbs.redis')).toBe('none');
  });

  it('lists secrets by variable only: they have no flag', () => {
    const secrets = Object.entries(SPECS).filter(([, s]) => s.secret);
    expect(secrets.length).toBeGreaterThanOrEqual(3);
    const section = help.slice(help.indexOf('Secrets:'));
    for (const [key, spec] of secrets) {
      expect(section).toContain(spec.env);
      expect(help).not.toContain(`--${key} <value>`);
    }
  });

  it('groups settings under headings and says how they combine', () => {
    for (const heading of ['Files and key store', 'HTTP control plane', 'IMAP listeners', 'Upstream mail servers', 'What clients are told']) expect(help).toContain(heading);
    expect(help).toContain('defaults < JSON file');
  });
});

describe('mistyped commands and the default command', () => {
  it.each([
    [['tokns', 'list'], "unknown command 'tokns' (did you mean tokens?)"],
    [['tokens', 'lst'], "unknown command 'lst' (did you mean list?)"],
    [['acounts', 'show', 'a@b.c'], "unknown command 'acounts' (did you mean accounts?)"],
    [['chek'], "unknown command 'chek' (did you mean check?)"],
    [['tokens', 'list', '--db.pth', 'x.db'], "unknown option '--db.pth' (did you mean --db.path?)"],
  ])('keygate %j → exit 2: %s', async (args, message) => {
    const r = await runCli(args);
    expect(r).toMatchObject({ code: 2, stdout: '', stderr: `keygate: ${message}\n` });
  });

  it('`keygate` with only options runs serve', async () => {
    const r = await runCli(['--http.port', 'eighty']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^keygate: invalid setting http\.port: expected a non-negative integer/);
  });

  it('`keygate --help` lists the commands', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['serve', 'tokens', 'accounts', 'config', 'check']) expect(r.stdout).toMatch(new RegExp(`^\\s+${c}\\b`, 'm'));
  });
});

describe('keygate config', () => {
  const SECRET = 'the-encryption-secret-0123456789';
  const MASTER = 'master pw: s3cr3t!';
  const NGINX = 'nginx-shared-secret-xyz';
  const REDIS_PW = 'redis-pass-42';
  const DOMAIN_PW = 'domain-master-pw-7';
  const env = {
    KEYGATE_SECRET: SECRET,
    KEYGATE_UPSTREAM_MASTER_PASSWORD: MASTER,
    KEYGATE_NGINX_AUTH_SECRET: NGINX,
    KEYGATE_REDIS_URL: `redis://keygate:${REDIS_PW}@127.0.0.1:6390/2?tls=false&sentinelPassword=${REDIS_PW}x`,
    KEYGATE_UPSTREAM_DOMAINS: JSON.stringify({ 'example.org': { imap: { host: 'imap.example.org' }, master: { user: 'kg', password: DOMAIN_PW } } }),
    KEYGATE_IMAP_SECURE_PORT: '22993',
    KEYGATE_UPSTREAM_MASTER_USER: 'keygate',
  };

  /** Every form a secret could leak in: as is, base64, hex, URL-encoded, SHA-256. */
  const forms = (s: string): string[] => [s, Buffer.from(s).toString('base64'), Buffer.from(s).toString('base64url'), Buffer.from(s).toString('hex'), encodeURIComponent(s), createHash('sha256').update(s).digest('hex')];

  it('prints every setting with its value and source, secrets masked in every form', async () => {
    const r = await runCli(['config', '--http.port', '9000'], env);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(Object.keys(SPECS).length);
    const row = (key: string): string => lines.find((l) => l.startsWith(`${key} `))!.replace(/\s+/g, ' ');
    expect(row('http.port')).toBe('http.port 9000 flag');
    expect(row('imap.securePort')).toBe('imap.securePort 22993 env KEYGATE_IMAP_SECURE_PORT');
    expect(row('public.imap.securePort')).toBe('public.imap.securePort 22993 imap.securePort');
    expect(row('auth.failureDelay')).toBe('auth.failureDelay 1s default');
    expect(row('secret')).toBe('secret (set) env KEYGATE_SECRET');
    expect(row('upstream.master.password')).toBe('upstream.master.password (set) env KEYGATE_UPSTREAM_MASTER_PASSWORD');
    expect(row('nginx.authSecret')).toBe('nginx.authSecret (set) env KEYGATE_NGINX_AUTH_SECRET');
    expect(row('dbs.redis')).toBe('dbs.redis redis://keygate:***@127.0.0.1:6390/2?tls=false&sentinelPassword=(set) env KEYGATE_REDIS_URL');
    expect(row('upstream.domains')).toContain('"master":{"user":"kg","password":"(set)"}');
    const all = r.stdout + r.stderr;
    for (const s of [SECRET, MASTER, NGINX, REDIS_PW, DOMAIN_PW]) for (const f of forms(s)) expect(all).not.toContain(f);
    // Not even the length of a secret.
    expect(all).not.toMatch(new RegExp(`\\b${SECRET.length}\\b`));
  });

  it('--json: the same rows, secrets masked; an unset secret says so', async () => {
    const r = await runCli(['config', '--json'], { KEYGATE_UPSTREAM_MASTER_PASSWORD: MASTER });
    expect(r.code, r.stderr).toBe(0);
    const rows = JSON.parse(r.stdout) as { setting: string; env: string; value: string; source: string }[];
    expect(rows.find((x) => x.setting === 'upstream.master.password')).toEqual({ setting: 'upstream.master.password', env: 'KEYGATE_UPSTREAM_MASTER_PASSWORD', value: '(set)', source: 'env KEYGATE_UPSTREAM_MASTER_PASSWORD' });
    expect(rows.find((x) => x.setting === 'secret')).toMatchObject({ value: '(not set)', source: 'default' });
    for (const f of forms(MASTER)) expect(r.stdout).not.toContain(f);
  });

  it('a secret as a flag is refused without being echoed', async () => {
    const r = await runCli(['config', '--secret', SECRET]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^keygate: --secret is not accepted on the command line/);
    for (const f of forms(SECRET)) expect(r.stderr + r.stdout).not.toContain(f);
  });
});
