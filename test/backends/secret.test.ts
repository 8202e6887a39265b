import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { setAccountUpstream, UpstreamInputError } from '../../src/backends/accounts.js';
import { Router } from '../../src/backends/routing.js';
import { checkSecret, openSecret, sealSecret, secretBox, SecretError } from '../../src/backends/secret.js';
import { loadConfig } from '../../src/config.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { account } from './helpers.js';

const SECRET = 'at-rest-secret-0123456789abcdef';
const dir = mkdtempSync(join(tmpdir(), 'keygate-secret-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('upstream credentials at rest', () => {
  it('seals with AES-256-GCM: fresh IV each time, bound to the account', () => {
    const box = secretBox(SECRET)!;
    const a = sealSecret(box, 'hunter2-upstream', 'a@example.com');
    const b = sealSecret(box, 'hunter2-upstream', 'a@example.com');
    expect(a).not.toBe(b);
    expect(a).toMatch(/^kgsec1\.[0-9a-f]{8}\./);
    expect(a).not.toContain('hunter2');
    expect(openSecret(box, a, 'A@Example.com')).toBe('hunter2-upstream');
    expect(() => openSecret(box, a, 'b@example.com')).toThrow(/does not authenticate/);
    const tampered = a.slice(0, -3) + (a.endsWith('AAA') ? 'BBB' : 'AAA');
    expect(() => openSecret(box, tampered, 'a@example.com')).toThrow(SecretError);
    expect(() => openSecret(secretBox('another-secret-0123456789')!, a, 'a@example.com')).toThrow(/KEYGATE_SECRET .* is not the secret/);
  });

  it('stores only ciphertext: the database file never holds the password', async () => {
    const path = join(dir, 'k.db');
    const store = openSqliteStore(path);
    const config = loadConfig({ env: {}, flags: { secret: SECRET, 'upstream.imap.host': 'imap.test', 'upstream.imap.login': 'account' } });
    await store.ensureAccount('alice@example.com');
    const saved = await setAccountUpstream(store, config, 'alice@example.com', { username: 'alice.up', password: 'very-secret-upstream-pw' });
    expect(JSON.stringify(saved)).not.toContain('very-secret-upstream-pw');
    expect((saved.upstream as { password: string }).password).toMatch(/^kgsec1\./);
    // the route opens it again
    const route = new Router(config).resolve((await store.getAccount('alice@example.com'))!, 'imap')!;
    expect(route.login).toEqual({ mode: 'account', user: 'alice.up', password: 'very-secret-upstream-pw' });
    // an update without a password keeps the sealed one; null removes it
    const kept = await setAccountUpstream(store, config, 'alice@example.com', { username: 'alice.up', imap: { port: 1993 } });
    expect((kept.upstream as { password: string }).password).toBe((saved.upstream as { password: string }).password);
    await store.close();
    const raw = readFileSync(path).toString('latin1') + readFileSync(`${path}-wal`, { flag: 'a+' }).toString('latin1');
    expect(raw).toContain('kgsec1.');
    expect(raw).not.toContain('very-secret-upstream-pw');
  });

  it('checkSecret: fine without credentials; a missing or wrong secret is a clear start-up error once they exist', async () => {
    const store = openSqliteStore(join(dir, 'c.db'));
    try {
      await store.ensureAccount('bob@example.com');
      expect(await checkSecret(store, { secret: '' })).toEqual({ accounts: 0 });
      await setAccountUpstream(store, { secret: SECRET }, 'bob@example.com', { password: 'bob-pw' });
      expect(await checkSecret(store, { secret: SECRET })).toEqual({ accounts: 1 });
      await expect(checkSecret(store, { secret: '' })).rejects.toThrow(/KEYGATE_SECRET \(setting secret\) is not set, but 1 account\(s\) have stored upstream credentials \(first: bob@example.com\)/);
      await expect(checkSecret(store, { secret: 'wrong-secret-0123456789' })).rejects.toThrow(SecretError);
      await expect(checkSecret(store, { secret: 'wrong-secret-0123456789' })).rejects.toThrow(/is not the secret the upstream credentials of bob@example.com were sealed with/);
    } finally {
      await store.close();
    }
  });

  it('refuses to store a password without a usable secret, and bad routes', async () => {
    const store = openSqliteStore(join(dir, 'r.db'));
    try {
      await store.ensureAccount('c@example.com');
      await expect(setAccountUpstream(store, { secret: '' }, 'c@example.com', { password: 'x' })).rejects.toThrow(/at least 16 characters/);
      await expect(setAccountUpstream(store, { secret: SECRET }, 'c@example.com', { imap: { tls: 'maybe' as never } })).rejects.toThrow(UpstreamInputError);
      // The same bounds as the HTTP schema, for every caller (the CLI too).
      await expect(setAccountUpstream(store, { secret: SECRET }, 'c@example.com', { password: 'p'.repeat(1025) })).rejects.toMatchObject({ field: 'password' });
      await expect(setAccountUpstream(store, { secret: SECRET }, 'c@example.com', { username: 'u'.repeat(255) })).rejects.toMatchObject({ field: 'username' });
      await expect(setAccountUpstream(store, { secret: SECRET }, 'c@example.com', { username: 'tab\there' })).rejects.toMatchObject({ field: 'username' });
      expect((await setAccountUpstream(store, { secret: SECRET }, 'c@example.com', { username: 'u'.repeat(254), password: 'p'.repeat(1024) })).upstream).toMatchObject({ username: 'u'.repeat(254) });
      await expect(setAccountUpstream(store, { secret: SECRET }, 'nobody@example.com', null)).rejects.toThrow(/not found/);
      expect((await setAccountUpstream(store, { secret: SECRET }, 'c@example.com', null)).upstream).toBeNull();
    } finally {
      await store.close();
    }
  });

  it('a password sealed under another secret fails routing with a SecretError', () => {
    const config = loadConfig({ env: {}, flags: { secret: 'yet-another-secret-012345', 'upstream.imap.host': 'h', 'upstream.imap.login': 'account' } });
    const sealed = sealSecret(secretBox(SECRET)!, 'pw', 'd@example.com');
    expect(() => new Router(config).resolve(account('d@example.com', { password: sealed }), 'imap')).toThrow(SecretError);
  });
});
