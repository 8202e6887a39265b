import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey } from '../../src/keys/format.js';
import { builtCliAvailable, runCli, type CliResult } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'keygate-no-echo-'));
const db = ['--db.path', join(dir, 'k.db')];

beforeAll(() => {
  if (!builtCliAvailable()) throw new Error('dist/cli.js is missing: run `npm run build` (npm test does it)');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The secret in every form a message could carry it: as is, without its prefix, base64, percent-encoded. */
function forms(secret: string): string[] {
  const hex = [...Buffer.from(secret)].map((b) => `%${b.toString(16).padStart(2, '0').toUpperCase()}`).join('');
  return [secret, secret.replace(/^kg_/, ''), Buffer.from(secret).toString('base64'), Buffer.from(secret).toString('base64url'), encodeURIComponent(secret), hex];
}

function expectRefusedWithoutEcho(r: CliResult, secret: string, names: RegExp, code: 1 | 2 = 2): void {
  expect(r.code).toBe(code);
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(/^keygate: /);
  expect(r.stderr).toMatch(names);
  for (const f of forms(secret)) expect(r.stderr.includes(f), `stderr carries ${f.slice(0, 10)}…: ${r.stderr}`).toBe(false);
}

describe('CLI and config errors name the problem, never a value that is or may be a secret', () => {
  const key = generateKey();

  it.each([
    [['tokens', 'issue', '-d', 'x', '-a', key], /--account/],
    [['tokens', 'issue', '-d', 'x', '-s', key], /unknown scope/],
    [['tokens', 'issue', '-d', 'x', '-s', `smtp,${key}`], /unknown scope/],
    [['tokens', 'issue', '-d', 'x', '--expires', key], /--expires/],
    [['tokens', 'issue', '-d', 'x', '--allowed-ip', '10.0.0.0/8', '--allowed-ip', key], /--allowed-ip #2/],
    [['accounts', 'add', key], /<address>/],
    [['accounts', 'add', 'a@example.com', '--alias', key], /--alias/],
    [['tokens', key], /unknown command/],
  ])('%j', async (args, names) => {
    expectRefusedWithoutEcho(await runCli([...args, ...db]), key, names);
  });

  const password = `Hunter2-${Math.random().toString(36).slice(2)}`;

  it('a Redis URL whose password breaks the URL syntax', async () => {
    expectRefusedWithoutEcho(await runCli(['tokens', 'list', '--dbs.redis', `redis://:${password}?x@127.0.0.1:1`]), password, /Redis URL/, 1);
  });

  it('a config file that is not JSON, or that has a secret of the wrong type', async () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, `{"secret": ${password}}`);
    expectRefusedWithoutEcho(await runCli(['tokens', 'list', '--config', bad, ...db]), password, /bad\.json is not valid JSON/);
    const typed = join(dir, 'typed.json');
    writeFileSync(typed, '{"nginx": {"authSecret": 4815162342}}');
    expectRefusedWithoutEcho(await runCli(['tokens', 'list', '--config', typed, ...db]), '4815162342', /nginx\.authSecret: expected a string/);
  });

  it('settings from the environment that hold a secret', async () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ KEYGATE_PUBLIC_URL: `https://admin:${password}@keygate.example.com` }, /setup\.publicUrl/],
      [{ KEYGATE_UPSTREAM_DOMAINS: `{"example.com": {"master": {"password": ${password}}}}` }, /upstream\.domains.*not valid JSON/],
      [{ KEYGATE_REDIS_URL: `mysql://u:${password}@db` }, /dbs\.redis/],
    ];
    for (const [env, names] of cases) expectRefusedWithoutEcho(await runCli(['tokens', 'list', ...db], env), password, names);
  });
});
