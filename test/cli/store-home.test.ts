import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtCliAvailable, runCli, type CliResult } from '../helpers/cli.js';

/*
 * Issue 13, item 5: the CLI never invents a store. Reading, listing,
 * exporting and revoking on a store that does not exist fail with one line
 * naming the path (exit 1) and create nothing; only the commands that make
 * keys or accounts create one. KEYGATE_HOME (or --home) fixes where the
 * store, certificates and keygate.json live, from any directory.
 */

const dir = mkdtempSync(join(tmpdir(), 'keygate-cli-home-'));
beforeAll(() => {
  if (!builtCliAvailable()) throw new Error('dist/cli.js is missing: run `npm run build` (npm test does it)');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh empty directory to run the CLI from. */
function freshDir(name: string): string {
  const d = join(dir, `${name}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(d);
  return d;
}

function expectMissingStore(r: CliResult, path: string): void {
  expect(r.code, r.stderr).toBe(1);
  expect(r.stdout).toBe('');
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(r.stderr).toBe(`keygate: no key store at ${path}: run from the directory that holds it, set KEYGATE_HOME (or --home), or name it with --db.path\n`);
}

describe('the CLI never invents a store', () => {
  const READERS: [string, string[]][] = [
    ['tokens list', ['tokens', 'list']],
    ['tokens list --json', ['tokens', 'list', '--json']],
    ['tokens export', ['tokens', 'export', '-t', 'some-id']],
    ['tokens revoke', ['tokens', 'revoke', 'some-id']],
    ['accounts show', ['accounts', 'show', 'ann@example.com']],
    ['accounts upstream --clear', ['accounts', 'upstream', 'ann@example.com', '--clear']],
  ];

  it.each(READERS)('%s on a mistyped --db.path: exit 1 naming the path; no file, no directory', async (_name, args) => {
    const cwd = freshDir('typo');
    const r = await runCli([...args, '--db.path', join(cwd, 'dta', 'keys', 'keygate.db')], {}, 20_000, cwd);
    expectMissingStore(r, join(cwd, 'dta', 'keys', 'keygate.db'));
    expect(readdirSync(cwd)).toEqual([]);
  });

  it('run from another directory, the default ./data store is named and not created', async () => {
    const cwd = freshDir('elsewhere');
    expectMissingStore(await runCli(['tokens', 'list'], {}, 20_000, cwd), join(cwd, 'data', 'keygate.db'));
    expect(readdirSync(cwd)).toEqual([]);
  });

  it('issue, import and accounts add create the store (and its directories)', async () => {
    const cwd = freshDir('create');
    const issued = await runCli(['tokens', 'issue', '-d', 'first'], {}, 20_000, cwd);
    expect(issued.code, issued.stderr).toBe(0);
    expect(existsSync(join(cwd, 'data', 'keygate.db'))).toBe(true);
    const blob = (await runCli(['tokens', 'export', '-t', issued.stdout.trim()], {}, 20_000, cwd)).stdout.trim();
    const imported = join(cwd, 'elsewhere', 'imported.db');
    expect(await runCli(['tokens', 'import', '-t', blob, '--db.path', imported], {}, 20_000, cwd)).toMatchObject({ code: 0, stdout: 'Token was imported\n' });
    expect(existsSync(imported)).toBe(true);
    const added = join(cwd, 'accounts', 'a.db');
    expect(await runCli(['accounts', 'add', 'ann@example.com', '--db.path', added], {}, 20_000, cwd)).toMatchObject({ code: 0 });
    expect(existsSync(added)).toBe(true);
  });
});

describe('KEYGATE_HOME and --home', () => {
  let home: string;
  let key: string;

  beforeAll(async () => {
    home = freshDir('home');
    const r = await runCli(['tokens', 'issue', '-d', 'made at home', '-a', 'ann@example.com'], { KEYGATE_HOME: home }, 20_000, freshDir('a'));
    expect(r.code, r.stderr).toBe(0);
    key = r.stdout.trim();
  });

  it('puts the store under <home>/data, whatever the working directory', async () => {
    expect(existsSync(join(home, 'data', 'keygate.db'))).toBe(true);
    for (const [env, args] of [[{ KEYGATE_HOME: home }, []], [{}, ['--home', home]]] as const) {
      const cwd = freshDir('b');
      const list = await runCli(['tokens', 'list', '--json', ...args], env, 20_000, cwd);
      expect(list.code, list.stderr).toBe(0);
      expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ name: 'made at home', account: 'ann@example.com' })]);
      expect((await runCli(['tokens', 'export', '-t', key, ...args], env, 20_000, cwd)).code).toBe(0);
      expect(readdirSync(cwd)).toEqual([]);
    }
  });

  it('relative paths in settings start at home, flags at the current directory; its keygate.json is read', async () => {
    writeFileSync(join(home, 'keygate.json'), JSON.stringify({ hostname: 'mail.home.example', tls: { dir: 'tls' } }));
    try {
      const cwd = freshDir('c');
      const r = await runCli(['config', '--json', '--tls.cert', 'here/cert.pem'], { KEYGATE_HOME: home, KEYGATE_TLS_KEY: 'there/key.pem', KEYGATE_DB_PATH: 'other/k.db' }, 20_000, cwd);
      expect(r.code, r.stderr).toBe(0);
      const rows = Object.fromEntries((JSON.parse(r.stdout) as { setting: string; value: string; source: string }[]).map((row) => [row.setting, row]));
      expect(rows.home).toMatchObject({ value: home, source: 'env KEYGATE_HOME' });
      expect(rows['db.path']).toMatchObject({ value: join(home, 'other', 'k.db'), source: 'env KEYGATE_DB_PATH' });
      expect(rows['tls.key']).toMatchObject({ value: join(home, 'there', 'key.pem'), source: 'env KEYGATE_TLS_KEY' });
      expect(rows['tls.cert']).toMatchObject({ value: join(cwd, 'here', 'cert.pem'), source: 'flag' });
      expect(rows['tls.dir']).toMatchObject({ value: join(home, 'tls'), source: `file ${join(home, 'keygate.json')}` });
      expect(rows.hostname).toMatchObject({ value: 'mail.home.example', source: `file ${join(home, 'keygate.json')}` });
      const abs = await runCli(['config', '--json', '--db.path', '/srv/keys.db'], { KEYGATE_HOME: home }, 20_000);
      expect((JSON.parse(abs.stdout) as { setting: string; value: string }[]).find((row) => row.setting === 'db.path')!.value).toBe('/srv/keys.db');
    } finally {
      rmSync(join(home, 'keygate.json'));
    }
  });
});
