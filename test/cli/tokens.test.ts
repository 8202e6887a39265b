import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY_RE, KEY_SCAN_RE } from '../../src/keys/format.js';
import { builtCliAvailable, runCli } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'keygate-cli-'));
const db = join(dir, 'k.db');
const dbFlags = ['--db.path', db];

beforeAll(() => {
  if (!builtCliAvailable()) throw new Error('dist/cli.js is missing: run `npm run build` (npm test does it)');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Usage errors exit 2, runtime errors 1; each prints one line on stderr and nothing on stdout. */
function expectOneLineError(r: { code: number; stdout: string; stderr: string }, code: 1 | 2, pattern: RegExp): void {
  expect(r.code).toBe(code);
  expect(r.stdout).toBe('');
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(/^keygate: /);
  expect(r.stderr).toMatch(pattern);
}

describe('keygate tokens (built CLI, SQLite)', () => {
  it('issue prints only the key; scopes repeatable and comma-separated; account created', async () => {
    const r = await runCli(['tokens', 'issue', '-d', 'Mail app', '-s', 'smtp,imap', '-s', 'pop3', '-a', 'User@Example.com', '--expires', '30d', ...dbFlags]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^kg_[0-9A-Za-z]{49}\n$/);
    const list = await runCli(['tokens', 'list', '--json', ...dbFlags]);
    const [tok] = JSON.parse(list.stdout) as Record<string, unknown>[];
    expect(tok).toMatchObject({ name: 'Mail app', account: 'user@example.com', scopes: ['smtp', 'imap', 'pop3'], revokedAt: null });
    expect(Date.parse(tok!.expiresAt as string) - Date.now()).toBeGreaterThan(29 * 86_400_000);
    expect(tok).not.toHaveProperty('hash');
    expect(list.stdout).not.toContain(r.stdout.trim());
  });

  it('issue --canary and the sending-limit flags: listed with the key; a bad limit is a usage error', async () => {
    const r = await runCli(['tokens', 'issue', '-n', 'bait', '-s', 'smtp', '-a', 'bait@example.com', '--canary', '--messages-per-hour', '5', '--recipients-per-day', '100', ...dbFlags]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^kg_[0-9A-Za-z]{49}\n$/);
    const listed = (JSON.parse((await runCli(['tokens', 'list', '--json', '-a', 'bait@example.com', ...dbFlags])).stdout) as Record<string, unknown>[])[0];
    expect(listed).toMatchObject({ name: 'bait', canary: true, limits: { messagesPerHour: 5, recipientsPerDay: 100 } });
    expect((await runCli(['tokens', 'list', '-a', 'bait@example.com', ...dbFlags])).stdout).toMatch(/active \(canary\)/);
    expectOneLineError(await runCli(['tokens', 'issue', '-n', 'x', '-s', 'smtp', '--recipients-per-message', '0', ...dbFlags]), 2, /--recipients-per-message: expected a whole number from 1 to 1000000/);
  });

  it('-n, --name names the key; -d, --description is the same option in the reference spelling', async () => {
    expect((await runCli(['tokens', 'issue', '-n', 'Named', '-s', 'smtp', ...dbFlags])).code).toBe(0);
    expect((await runCli(['tokens', 'issue', '--description', 'Described', '-s', 'smtp', ...dbFlags])).code).toBe(0);
    const names = (JSON.parse((await runCli(['tokens', 'list', '--json', ...dbFlags])).stdout) as { name: string }[]).map((t) => t.name);
    expect(names).toEqual(expect.arrayContaining(['Named', 'Described']));
    expectOneLineError(await runCli(['tokens', 'issue', '-n', 'one', '-d', 'other', ...dbFlags]), 2, /name or description/);
  });

  it('default scope is *; list prints a table; revoke by id', async () => {
    const key = (await runCli(['tokens', 'issue', '-d', 'Admin', ...dbFlags])).stdout.trim();
    expect(key).toMatch(KEY_RE);
    const json = JSON.parse((await runCli(['tokens', 'list', '--json', ...dbFlags])).stdout) as { id: string; name: string; scopes: string[] }[];
    const admin = json.find((t) => t.name === 'Admin')!;
    expect(admin.scopes).toEqual(['*']);
    const table = await runCli(['tokens', 'list', ...dbFlags]);
    expect(table.stdout.split('\n')[0]).toMatch(/^ID\s+NAME\s+ACCOUNT\s+SCOPES\s+STATE\s+LAST USED$/);
    expect(table.stdout).toContain(admin.id);
    const rev = await runCli(['tokens', 'revoke', admin.id, ...dbFlags]);
    expect(rev).toMatchObject({ code: 0, stdout: 'Token was revoked\n' });
    expect((await runCli(['tokens', 'list', ...dbFlags])).stdout).toMatch(new RegExp(`${admin.id}.*revoked`));
  });

  it('export by key or by id gives the same blob; import of an existing token says so and exits 0', async () => {
    const key = (await runCli(['tokens', 'issue', '-d', 'Exp', '-s', 'api', ...dbFlags])).stdout.trim();
    const byKey = await runCli(['tokens', 'export', '-t', key, ...dbFlags]);
    expect(byKey.code).toBe(0);
    const blob = byKey.stdout.trim();
    expect(blob).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(blob).not.toContain(key);
    const id = (JSON.parse((await runCli(['tokens', 'list', '--json', ...dbFlags])).stdout) as { id: string; name: string }[]).find((t) => t.name === 'Exp')!.id;
    expect((await runCli(['tokens', 'export', '-t', id, ...dbFlags])).stdout.trim()).toBe(blob);
    expect(await runCli(['tokens', 'import', '-t', blob, ...dbFlags])).toMatchObject({ code: 0, stdout: 'Token already exists\n', stderr: '' });
    const other = join(dir, 'other.db');
    expect(await runCli(['tokens', 'import', '-t', blob, '--db.path', other])).toMatchObject({ code: 0, stdout: 'Token was imported\n' });
    expect(await runCli(['tokens', 'import', '-t', blob, '--db.path', other])).toMatchObject({ code: 0, stdout: 'Token already exists\n' });
  });

  describe('bad input: one line on stderr, the right exit code, nothing written', () => {
    const fresh = () => join(dir, `fresh-${Math.random().toString(36).slice(2)}.db`);

    it('malformed blob → 2', async () => {
      const p = fresh();
      expectOneLineError(await runCli(['tokens', 'import', '-t', 'not*a*blob', '--db.path', p]), 2, /malformed token blob/);
      expectOneLineError(await runCli(['tokens', 'import', '-t', 'aGVsbG8', '--db.path', p]), 2, /malformed token blob/);
      expect(existsSync(p)).toBe(false);
    });
    it('unknown scope → 2', async () => {
      const p = fresh();
      expectOneLineError(await runCli(['tokens', 'issue', '-d', 'x', '-s', 'root', '--db.path', p]), 2, /unknown scope "root"/);
      expect(existsSync(p)).toBe(false);
    });
    it('bad date → 2', async () => {
      const p = fresh();
      expectOneLineError(await runCli(['tokens', 'issue', '-d', 'x', '--expires', 'tomorrow', '--db.path', p]), 2, /--expires/);
      expectOneLineError(await runCli(['tokens', 'issue', '-d', 'x', '--expires', '2020-01-01', '--db.path', p]), 2, /past/);
      expect(existsSync(p)).toBe(false);
    });
    it('bad account or CIDR → 2', async () => {
      const p = fresh();
      expectOneLineError(await runCli(['tokens', 'issue', '-d', 'x', '-a', 'not-an-address', '--db.path', p]), 2, /not an address/);
      expectOneLineError(await runCli(['tokens', 'issue', '-d', 'x', '--allowed-ip', '10.0.0.0/99', '--db.path', p]), 2, /CIDR/);
      expect(existsSync(p)).toBe(false);
    });
    it('missing required option or unknown option → 2', async () => {
      expectOneLineError(await runCli(['tokens', 'issue', '-s', 'smtp', ...dbFlags]), 2, /description/);
      expectOneLineError(await runCli(['tokens', 'issue', '-d', 'x', '--frobnicate', ...dbFlags]), 2, /unknown option/);
      expectOneLineError(await runCli(['tokens', 'explode']), 2, /unknown command/);
    });
    it('unreachable Redis → 1, quickly, without a password in the message', async () => {
      const t0 = Date.now();
      const r = await runCli(['tokens', 'issue', '-d', 'x', '--dbs.redis', 'redis://:hunter2@127.0.0.1:1']);
      expectOneLineError(r, 1, /Redis/i);
      expect(r.stderr).not.toContain('hunter2');
      expect(Date.now() - t0).toBeLessThan(10_000);
    });
    it('bad setting in the environment → 2, naming it', async () => {
      expectOneLineError(await runCli(['tokens', 'list', ...dbFlags], { KEYGATE_REDIS_URL: 'mysql://x' }), 2, /dbs\.redis/);
    });
    it('export or revoke of an unknown token → 1', async () => {
      expectOneLineError(await runCli(['tokens', 'export', '-t', 'no-such-id', ...dbFlags]), 1, /not found/);
      expectOneLineError(await runCli(['tokens', 'revoke', 'no-such-id', ...dbFlags]), 1, /not found/);
    });
  });

  it('no command output ever contains a key except issue', async () => {
    const key = (await runCli(['tokens', 'issue', '-d', 'Leak check', ...dbFlags])).stdout.trim();
    const outs = await Promise.all([
      runCli(['tokens', 'list', ...dbFlags]),
      runCli(['tokens', 'list', '--json', ...dbFlags]),
      runCli(['tokens', 'export', '-t', key, ...dbFlags]),
      runCli(['tokens', 'revoke', key, ...dbFlags]),
    ]);
    for (const o of outs) expect(`${o.stdout}${o.stderr}`).not.toMatch(KEY_SCAN_RE);
  });
});

describe('secrets on the command line (built CLI)', () => {
  it('refuses --secret, --upstream.master.password and --nginx.authSecret, naming the variable and never echoing the value', async () => {
    const cases: Array<[string, string]> = [
      ['secret', 'KEYGATE_SECRET'],
      ['upstream.master.password', 'KEYGATE_UPSTREAM_MASTER_PASSWORD'],
      ['nginx.authSecret', 'KEYGATE_NGINX_AUTH_SECRET'],
    ];
    for (const [flag, env] of cases) {
      const r = await runCli(['serve', '--db.path', db, `--${flag}`, 'hunter2-do-not-echo-me']);
      expectOneLineError(r, 2, new RegExp(`--${flag.replace('.', '\\.')} is not accepted on the command line.*${env}`));
      expect(r.stderr).not.toContain('hunter2');
    }
  });
});
