import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeExport } from '../../src/keys/export-codec.js';
import { newKey } from '../../src/keys/new-key.js';
import type { KeyRecord } from '../../src/keys/record.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { builtCliAvailable, runCli } from '../helpers/cli.js';

/*
 * `tokens list` and `accounts list` read the store a page (1,000) at a time
 * and print as they go; `tokens issue` and `tokens import` obey the
 * per-account key limit like the API.
 */

const dir = mkdtempSync(join(tmpdir(), 'keygate-cli-lists-'));
const db = join(dir, 'k.db');
const dbFlags = ['--db.path', db];
const made: KeyRecord[] = [];

beforeAll(async () => {
  if (!builtCliAvailable()) throw new Error('dist/cli.js is missing: run `npm run build` (npm test does it)');
  const store = openSqliteStore(db);
  const t0 = Date.parse('2026-01-01T00:00:00Z');
  for (let i = 0; i < 1205; i++) {
    const k = newKey({ name: i % 100 === 0 ? `Phone ${i}` : `Laptop ${i}`, scopes: ['smtp'], account: `user${i % 250}@example.com` }, new Date(t0 + i * 1000)).record;
    await store.importKey(i % 50 === 0 ? { ...k, revokedAt: new Date(t0).toISOString() } : k);
    made.push(k);
  }
  await store.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('keygate tokens list / accounts list (built CLI, SQLite)', () => {
  it('tokens list --json prints every token across pages, newest first, as one JSON array', async () => {
    const r = await runCli(['tokens', 'list', '--json', ...dbFlags]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const list = JSON.parse(r.stdout) as { id: string; hash?: string }[];
    expect(list.map((t) => t.id)).toEqual([...made].reverse().map((k) => k.id));
    expect(list.some((t) => 'hash' in t)).toBe(false);
    // The same text JSON.stringify(list, null, 2) gives.
    expect(r.stdout).toBe(`${JSON.stringify(list, null, 2)}\n`);
  });

  it('tokens list prints one table across pages; filters narrow it', async () => {
    const table = (await runCli(['tokens', 'list', ...dbFlags])).stdout.trimEnd().split('\n');
    expect(table[0]).toMatch(/^ID\s+NAME\s+ACCOUNT\s+SCOPES\s+STATE\s+LAST USED$/);
    expect(table).toHaveLength(1206);
    expect(table[1]).toContain(made.at(-1)!.id);
    expect(table.at(-1)).toMatch(new RegExp(`^${made[0]!.id}\\s+Phone 0\\s+user0@example.com\\s+smtp\\s+revoked\\s+-$`));

    const ids = async (...args: string[]) => (JSON.parse((await runCli(['tokens', 'list', '--json', ...args, ...dbFlags])).stdout) as { id: string }[]).map((t) => t.id);
    const newest = (pick: (k: KeyRecord, i: number) => boolean) => made.filter(pick).reverse().map((k) => k.id);
    expect(await ids('--state', 'revoked')).toEqual(newest((_, i) => i % 50 === 0));
    expect(await ids('--name-prefix', 'Phone', '--state', 'active')).toEqual(newest((k, i) => k.name.startsWith('Phone') && i % 50 !== 0));
    expect(await ids('-a', 'USER7@example.com')).toEqual(newest((k) => k.account === 'user7@example.com'));
    expect(await ids('--address-prefix', 'user24')).toEqual(newest((k) => k.account!.startsWith('user24')));
    const bad = await runCli(['tokens', 'list', '--state', 'dead', ...dbFlags]);
    expect(bad).toMatchObject({ code: 2, stdout: '' });
    expect(bad.stderr).toMatch(/^keygate: --state: expected one of active, revoked, expired\n$/);
  });

  it('accounts list prints every account by address, in a table or as JSON, and takes a prefix', async () => {
    const json = JSON.parse((await runCli(['accounts', 'list', '--json', ...dbFlags])).stdout) as { address: string }[];
    expect(json).toHaveLength(250);
    expect(json.map((a) => a.address)).toEqual(json.map((a) => a.address).sort());
    expect(json[0]).toEqual({ address: 'user0@example.com', aliases: [], displayName: null, disabled: false, createdAt: made[0]!.createdAt });
    const table = (await runCli(['accounts', 'list', '--prefix', 'user19', ...dbFlags])).stdout.trimEnd().split('\n');
    expect(table[0]).toMatch(/^ADDRESS\s+DISPLAY NAME\s+ALIASES\s+DISABLED\s+CREATED$/);
    expect(table.slice(1).map((l) => l.split(/\s+/)[0])).toEqual([...Array.from({ length: 10 }, (_, i) => `user19${i}@example.com`), 'user19@example.com']);
  });

  it('tokens issue and tokens import stop at the per-account key limit, naming it (exit 1)', async () => {
    const env = { KEYGATE_LIMITS_KEYS_PER_ACCOUNT: '4' };
    // user3 holds 4 active keys already (user3, 253, 503, 753, 1003: the first revoked).
    const issued = await runCli(['tokens', 'issue', '-d', 'one more', '-s', 'smtp', '-a', 'user3@example.com', ...dbFlags], env);
    expect(issued).toMatchObject({ code: 1, stdout: '' });
    expect(issued.stderr).toBe('keygate: account user3@example.com already has 4 active keys, the most allowed (limits.keysPerAccount); revoke one first\n');
    const blob = encodeExport(newKey({ name: 'imported', scopes: ['smtp'], account: 'user3@example.com' }).record);
    const imported = await runCli(['tokens', 'import', '-t', blob, ...dbFlags], env);
    expect(imported.code).toBe(1);
    expect(imported.stderr).toMatch(/4 active keys.*limits\.keysPerAccount/);
    // Under the default limit (100) both go through.
    expect((await runCli(['tokens', 'issue', '-d', 'one more', '-s', 'smtp', '-a', 'user3@example.com', ...dbFlags])).code).toBe(0);
    expect((await runCli(['tokens', 'import', '-t', blob, ...dbFlags])).stdout).toBe('Token was imported\n');
    const bad = await runCli(['tokens', 'list', ...dbFlags], { KEYGATE_LIMITS_KEYS_PER_ACCOUNT: '0' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/limits\.keysPerAccount/);
  });
});
