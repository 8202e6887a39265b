import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { newKey } from '../../src/keys/new-key.js';
import type { KeyRecord } from '../../src/keys/record.js';
import { KeyLimitError } from '../../src/store/errors.js';
import { allPages, keyState } from '../../src/store/paging.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { KeyStore } from '../../src/store/types.js';
import { runKeyStoreConformance } from './conformance.js';

const dir = mkdtempSync(join(tmpdir(), 'keygate-sqlite-'));
let n = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('SQLite store', () => {
  const paths = new WeakMap<KeyStore, string>();
  runKeyStoreConformance({
    name: 'sqlite',
    open: async (limits) => {
      const path = join(dir, `t${n++}.db`);
      const store = openSqliteStore(path, { touchIntervalMs: 20, ...limits });
      paths.set(store, path);
      return store;
    },
    // A second connection to the same file, as a second process would open it.
    openPeer: async (store, limits) => openSqliteStore(paths.get(store)!, { touchIntervalMs: 20, ...limits }),
  });

  it('keeps its data in a WAL-mode file across reopen', async () => {
    const path = join(dir, 'persist.db');
    const s1 = openSqliteStore(path);
    const { record } = newKey({ name: 'p', scopes: ['*'] });
    await s1.createKey(record);
    s1.touchKey(record.id, { at: '2026-05-01T00:00:00.000Z', ip: '127.0.0.1', protocol: 'http' });
    await s1.close(); // close flushes buffered touches
    const s2 = openSqliteStore(path);
    expect(await s2.getKey(record.id)).toMatchObject({ id: record.id, lastUsedAt: '2026-05-01T00:00:00.000Z' });
    await s2.close();
  });

  it('opens a file from before canary keys and sending limits: its keys are plain keys, and new ones keep both', async () => {
    const path = join(dir, 'old-schema.db');
    const old = new Database(path);
    old.exec(`CREATE TABLE keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL, account TEXT, scopes TEXT NOT NULL,
      created_at TEXT NOT NULL, expires_at TEXT, allowed_ips TEXT, revoked_at TEXT, last_used_at TEXT, last_used_ip TEXT,
      last_used_protocol TEXT, platform TEXT, device_id TEXT, rotated_from TEXT)`);
    const { record } = newKey({ name: 'old', scopes: ['smtp'] });
    old.prepare('INSERT INTO keys (id, hash, name, scopes, created_at) VALUES (?, ?, ?, ?, ?)').run(record.id, record.hash, 'old', '["smtp"]', record.createdAt);
    old.close();
    const store = openSqliteStore(path);
    expect(await store.getKey(record.id)).toMatchObject({ name: 'old', canary: false, limits: null });
    const canary = newKey({ name: 'bait', scopes: ['imap'], canary: true, limits: { recipientsPerMessage: 3 } }).record;
    await store.createKey(canary);
    expect(await store.getKey(canary.id)).toMatchObject({ canary: true, limits: { recipientsPerMessage: 3 } });
    await store.close();
  });
});

describe('SQLite store: a schema-1 file (before counters and pages)', () => {
  // The schema the store used before issue 17, as a deployment upgrading has it.
  const V1 = `
CREATE TABLE keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL, account TEXT, scopes TEXT NOT NULL, created_at TEXT NOT NULL,
  expires_at TEXT, allowed_ips TEXT, revoked_at TEXT, last_used_at TEXT, last_used_ip TEXT, last_used_protocol TEXT, platform TEXT, device_id TEXT, rotated_from TEXT);
CREATE INDEX keys_account ON keys(account, created_at);
CREATE TABLE accounts (address TEXT PRIMARY KEY, display_name TEXT, disabled INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, upstream TEXT);
CREATE TABLE aliases (alias TEXT PRIMARY KEY, address TEXT NOT NULL REFERENCES accounts(address) ON DELETE CASCADE);
CREATE TABLE kv (name TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at INTEGER);`;

  it('is migrated on open: every key kept with every field, in order, counted, paged and capped', async () => {
    const path = join(dir, 'v1.db');
    const db = new Database(path);
    db.exec(V1);
    const insert = db.prepare('INSERT INTO keys VALUES (@id, @hash, @name, @account, @scopes, @created_at, @expires_at, @allowed_ips, @revoked_at, @last_used_at, @last_used_ip, @last_used_protocol, @platform, @device_id, @rotated_from)');
    const made: KeyRecord[] = [];
    for (let i = 0; i < 40; i++) {
      const { record } = newKey(
        {
          name: `k${i}`,
          scopes: ['smtp', 'imap'],
          account: i % 4 === 0 ? null : `u${i % 3}@example.com`,
          expiresAt: i % 5 === 0 ? '2020-01-01T00:00:00.000Z' : null,
          allowedIps: i % 6 === 0 ? ['10.0.0.0/8'] : null,
          deviceId: i % 7 === 0 ? `d${i}` : null,
          platform: i % 7 === 0 ? 'ios' : null,
        },
        // Seconds apart, except a run created in the same millisecond.
        new Date(Date.parse('2026-01-01T00:00:00Z') + (i < 30 ? i : 30) * 1000),
      );
      const k = { ...record, revokedAt: i % 9 === 0 ? '2026-02-01T00:00:00.000Z' : null, lastUsedAt: i % 2 ? '2026-03-01T00:00:00.000Z' : null, lastUsedIp: i % 2 ? '::1' : null, lastUsedProtocol: i % 2 ? 'imap' : null };
      insert.run({ ...k, created_at: k.createdAt, expires_at: k.expiresAt, allowed_ips: k.allowedIps && JSON.stringify(k.allowedIps), scopes: JSON.stringify(k.scopes), revoked_at: k.revokedAt, last_used_at: k.lastUsedAt, last_used_ip: k.lastUsedIp, last_used_protocol: k.lastUsedProtocol, device_id: k.deviceId, rotated_from: k.rotatedFrom });
      made.push(k);
    }
    db.prepare("INSERT INTO accounts VALUES ('u1@example.com', 'U', 0, '2026-01-01T00:00:00.000Z', '{\"imap\":{\"host\":\"h\"}}')").run();
    db.close();

    const messages: unknown[] = [];
    const store = openSqliteStore(path, { keysPerAccount: 3, onMigration: (m, d) => messages.push({ m, d }) });
    try {
      expect(messages).toEqual([{ m: 'Migrated the SQLite store to schema 2', d: { keys: 40 } }]);
      const listed: KeyRecord[] = [];
      for await (const page of allPages((cursor) => store.listKeys({ cursor, limit: 7 }))) listed.push(...page);
      // Newest first; keys of one millisecond newest-inserted first.
      expect(listed).toEqual([...made].reverse());
      for (const k of made) expect(await store.findByHash(k.hash)).toEqual(k);
      const now = new Date();
      const walked = { active: 0, revoked: 0, expired: 0 };
      for (const k of made) walked[keyState(k, now.getTime())]++;
      expect(await store.countKeys(now)).toEqual(walked);
      expect((await store.listAccounts({ withUpstream: true })).items.map((a) => a.address)).toEqual(['u1@example.com']);
      // The limit applies to what was there: u1 holds more than 3 active keys already.
      await expect(store.createKey(newKey({ name: 'more', scopes: ['smtp'], account: 'u1@example.com' }).record)).rejects.toBeInstanceOf(KeyLimitError);
    } finally {
      await store.close();
    }
    // A second open finds schema 2 and moves nothing.
    const again = openSqliteStore(path, { onMigration: (m) => messages.push(m) });
    expect((await again.listKeys({ limit: 1000 })).items).toHaveLength(40);
    await again.close();
    expect(messages).toHaveLength(1);
  });
  it("keeps guard's canary mark and sending limits of a schema-1 file that has them", async () => {
    const path = join(dir, 'v1-guard.db');
    const db = new Database(path);
    db.exec(V1 + 'ALTER TABLE keys ADD COLUMN canary INTEGER NOT NULL DEFAULT 0; ALTER TABLE keys ADD COLUMN limits TEXT;');
    const canary = newKey({ name: 'bait', scopes: ['imap'], account: 'a@example.com', canary: true }).record;
    const limited = newKey({ name: 'mailer', scopes: ['smtp'], limits: { messagesPerHour: 10, recipientsPerDay: 100 } }).record;
    const insert = db.prepare('INSERT INTO keys (id, hash, name, account, scopes, created_at, canary, limits) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    insert.run(canary.id, canary.hash, canary.name, canary.account, '["imap"]', canary.createdAt, 1, null);
    insert.run(limited.id, limited.hash, limited.name, null, '["smtp"]', limited.createdAt, 0, JSON.stringify(limited.limits));
    db.close();
    const store = openSqliteStore(path);
    try {
      expect(await store.findByHash(canary.hash)).toEqual(canary);
      expect(await store.getKey(limited.id)).toEqual(limited);
    } finally {
      await store.close();
    }
  });
});
