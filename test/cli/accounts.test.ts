import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSealed, openSecret, secretBox } from '../../src/backends/secret.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { builtCliAvailable, cleanEnv, CLI, ROOT, runCli, type CliResult } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'keygate-cli-accounts-'));
const db = join(dir, 'k.db');
const dbFlags = ['--db.path', db];
const SECRET = 'cli-accounts-secret-0123456789';
const withSecret = { KEYGATE_SECRET: SECRET };
/** Every upstream password given to the CLI here; no output may ever show one. */
const PASSWORDS = ['file pw 1 with spaces', 'stdin-pw-2', 'stdin-pw-3', 'pw-in-a-broken-file'];
const outputs: CliResult[] = [];

beforeAll(() => {
  if (!builtCliAvailable()) throw new Error('dist/cli.js is missing: run `npm run build` (npm test does it)');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** runCli, with `stdin` written to the program's standard input (then closed). */
function cli(args: string[], env: Record<string, string> = {}, stdin?: string): Promise<CliResult> {
  const done = (r: CliResult): CliResult => (outputs.push(r), r);
  if (stdin === undefined) return runCli(args, env).then(done);
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { env: cleanEnv(env), cwd: ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve(done({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
    });
    child.stdin!.end(stdin);
  });
}

function routeFile(route: unknown): string {
  const p = join(dir, `route-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(p, typeof route === 'string' ? route : JSON.stringify(route));
  return p;
}

/** The account's upstream record as stored, read straight from the SQLite file. */
async function storedUpstream(address: string, path = db): Promise<Record<string, unknown> | null> {
  const store = openSqliteStore(path);
  try {
    return (await store.getAccount(address))!.upstream;
  } finally {
    await store.close();
  }
}

function expectOneLineError(r: CliResult, code: 1 | 2, pattern: RegExp): void {
  expect(r.code).toBe(code);
  expect(r.stdout).toBe('');
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(/^keygate: /);
  expect(r.stderr).toMatch(pattern);
}

describe('keygate accounts (built CLI, SQLite)', () => {
  it('add creates the account (address and aliases lowercased); show says it has no route', async () => {
    const r = await cli(['accounts', 'add', 'Ann@Example.com', '--display-name', 'Ann', '--alias', 'ANNIE@example.com', '--alias', 'a@example.org', ...dbFlags]);
    expect(r).toMatchObject({ code: 0, stdout: 'Account ann@example.com was created\n', stderr: '' });
    const store = openSqliteStore(db);
    expect(await store.getAccount('ann@example.com')).toMatchObject({ displayName: 'Ann', aliases: expect.arrayContaining(['annie@example.com', 'a@example.org']), upstream: null });
    await store.close();
    const show = await cli(['accounts', 'show', 'ann@example.com', ...dbFlags]);
    expect(show.code).toBe(0);
    expect(JSON.parse(show.stdout)).toEqual({ account: 'ann@example.com', route: null });
  });

  it('add of a taken address or alias → 1; a bad address → 2 before any store is opened', async () => {
    expectOneLineError(await cli(['accounts', 'add', 'ann@example.com', ...dbFlags]), 1, /taken/);
    expectOneLineError(await cli(['accounts', 'add', 'annie@example.com', ...dbFlags]), 1, /taken/);
    const fresh = join(dir, 'never.db');
    expectOneLineError(await cli(['accounts', 'add', 'not-an-address', '--db.path', fresh]), 2, /not an address/);
    expectOneLineError(await cli(['accounts', 'add', 'x@example.com', '--alias', 'nope', '--db.path', fresh]), 2, /--alias/);
    expectOneLineError(await cli(['accounts', 'add', 'x@example.com', '--alias', 'X@example.com', '--db.path', fresh]), 2, /account address itself/);
    expect(existsSync(fresh)).toBe(false);
  });

  it('upstream --route with the password in the file: stored sealed under KEYGATE_SECRET, printed as passwordSet', async () => {
    const route = { imap: { host: 'imap.upstream.test', port: 993, tls: 'implicit', login: 'account' }, username: 'ann.up', password: PASSWORDS[0] };
    const r = await cli(['accounts', 'upstream', 'ann@example.com', '--route', routeFile(route), ...dbFlags], withSecret);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const view = { account: 'ann@example.com', route: { imap: route.imap, username: 'ann.up', passwordSet: true } };
    expect(JSON.parse(r.stdout)).toEqual(view);
    expect(JSON.parse((await cli(['accounts', 'show', 'ann@example.com', ...dbFlags])).stdout)).toEqual(view);

    const sealed = (await storedUpstream('ann@example.com'))!.password;
    expect(isSealed(sealed)).toBe(true);
    expect(sealed).not.toContain(PASSWORDS[0]);
    expect(openSecret(secretBox(SECRET)!, sealed as string, 'ann@example.com')).toBe(PASSWORDS[0]);
  });

  it('--password-stdin: the password is the first line of standard input; a route without a password keeps the stored one', async () => {
    const file = routeFile({ imap: { login: 'account' } });
    const r = await cli(['accounts', 'upstream', 'ann@example.com', '--route', file, '--password-stdin', ...dbFlags], withSecret, `${PASSWORDS[1]}\n`);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).route).toEqual({ imap: { login: 'account' }, username: null, passwordSet: true });
    const sealed = (await storedUpstream('ann@example.com'))!.password as string;
    expect(openSecret(secretBox(SECRET)!, sealed, 'ann@example.com')).toBe(PASSWORDS[1]);

    // No password anywhere: the stored one is kept (no secret needed for that).
    const kept = await cli(['accounts', 'upstream', 'ann@example.com', '--route', routeFile({ imap: { login: 'account', port: 1993 } }), ...dbFlags]);
    expect(kept.code).toBe(0);
    expect(JSON.parse(kept.stdout).route.passwordSet).toBe(true);
    expect((await storedUpstream('ann@example.com'))!.password).toBe(sealed);

    // The route itself from standard input; "password": null removes the stored one.
    const removed = await cli(['accounts', 'upstream', 'ann@example.com', '--route', '-', ...dbFlags], {}, JSON.stringify({ imap: { login: 'master' }, password: null }));
    expect(removed.code).toBe(0);
    expect(JSON.parse(removed.stdout).route).toEqual({ imap: { login: 'master' }, username: null, passwordSet: false });
    expect(await storedUpstream('ann@example.com')).not.toHaveProperty('password');
  });

  it('--clear removes the route', async () => {
    const set = await cli(['accounts', 'upstream', 'ann@example.com', '--route', routeFile({ imap: { login: 'account' } }), '--password-stdin', ...dbFlags], withSecret, PASSWORDS[2]);
    expect(set.code).toBe(0);
    const r = await cli(['accounts', 'upstream', 'ann@example.com', '--clear', ...dbFlags]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ account: 'ann@example.com', route: null });
    expect(await storedUpstream('ann@example.com')).toBeNull();
  });

  describe('bad input: one line on stderr, the right exit code, nothing written', () => {
    const upstream = (args: string[], env: Record<string, string> = withSecret, stdin?: string) =>
      cli(['accounts', 'upstream', 'ann@example.com', ...args, ...dbFlags], env, stdin);

    it.each([
      [{ imap: { tls: 'maybe' } }, /imap\.tls/],
      [{ imap: { login: 'lmtp' } }, /imap\.login/],
      [{ pop3: { host: 'bad host' } }, /pop3\.host/],
      [{ imap: null }, /imap/],
      [{ upstream: {} }, /upstream: unknown field/],
      [{ username: 5 }, /username/],
      [{ username: '  ' }, /username/],
      [{ password: '' }, /password/],
      [{ password: 'two\nlines' }, /password/],
      [[1, 2], /JSON object/],
      ['{ not json', /not valid JSON/],
      [`{ "password": "${PASSWORDS[3]}", }`, /not valid JSON \(at character \d+\)$/m],
    ])('route %j → 2', async (route, pattern) => {
      expectOneLineError(await upstream(['--route', routeFile(route)]), 2, pattern);
      expect(await storedUpstream('ann@example.com')).toBeNull();
    });

    it('usage: neither or both of --route and --clear, two readers of standard input, two passwords, a password flag → 2', async () => {
      expectOneLineError(await upstream([]), 2, /--route <file> or --clear/);
      expectOneLineError(await upstream(['--route', routeFile({}), '--clear']), 2, /--route <file> or --clear/);
      expectOneLineError(await upstream(['--clear', '--password-stdin'], withSecret, 'x'), 2, /--password-stdin/);
      expectOneLineError(await upstream(['--route', '-', '--password-stdin'], withSecret, 'x'), 2, /standard input/);
      expectOneLineError(await upstream(['--route', routeFile({ password: 'a' }), '--password-stdin'], withSecret, 'b'), 2, /already has a password/);
      expectOneLineError(await upstream(['--route', routeFile({}), '--password-stdin'], withSecret, '\n'), 2, /standard input is empty/);
      expectOneLineError(await upstream(['--route', join(dir, 'missing.json')]), 2, /cannot read .*ENOENT/);
      expectOneLineError(await upstream(['--route', routeFile({}), '--password', 'on-the-command-line']), 2, /unknown option/);
      expect(await storedUpstream('ann@example.com')).toBeNull();
    });

    it('a password without KEYGATE_SECRET (or a short one) → 2 naming the setting, before the store is opened', async () => {
      const fresh = join(dir, 'never-secret.db');
      const route = routeFile({ imap: { login: 'account' }, password: 'pw' });
      expectOneLineError(await cli(['accounts', 'upstream', 'ann@example.com', '--route', route, '--db.path', fresh]), 2, /KEYGATE_SECRET/);
      expectOneLineError(await cli(['accounts', 'upstream', 'ann@example.com', '--route', route, '--db.path', fresh], { KEYGATE_SECRET: 'short' }), 2, /at least 16/);
      expect(existsSync(fresh)).toBe(false);
    });

    it('a secret other than the one the stored credentials were sealed with → 2 (a configuration error); nothing written', async () => {
      expect((await cli(['accounts', 'add', 'bob@example.com', ...dbFlags])).code).toBe(0);
      expect((await cli(['accounts', 'upstream', 'bob@example.com', '--route', '-', ...dbFlags], withSecret, JSON.stringify({ password: 'bob-pw' }))).code).toBe(0);
      const r = await upstream(['--route', routeFile({ password: 'pw' })], { KEYGATE_SECRET: 'another-secret-0123456789' });
      expectOneLineError(r, 2, /not the secret/);
      expect(await storedUpstream('ann@example.com')).toBeNull();
    });

    it('unknown account → 1 for upstream and show', async () => {
      expectOneLineError(await cli(['accounts', 'upstream', 'nobody@example.com', '--clear', ...dbFlags]), 1, /account nobody@example\.com not found/);
      expectOneLineError(await cli(['accounts', 'show', 'nobody@example.com', ...dbFlags]), 1, /account nobody@example\.com not found/);
      expectOneLineError(await cli(['accounts', 'show', 'nope', ...dbFlags]), 2, /not an address/);
    });
  });

  it('no output of any command ever showed an upstream password or a sealed value', () => {
    expect(outputs.length).toBeGreaterThan(30);
    const text = outputs.map((r) => r.stdout + r.stderr).join('\n');
    for (const p of [...PASSWORDS, 'bob-pw']) expect(text).not.toContain(p);
    expect(text).not.toContain('kgsec1');
  });
});
