import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { newKey } from '../../src/keys/new-key.js';
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
    open: async () => {
      const path = join(dir, `t${n++}.db`);
      const store = openSqliteStore(path, { touchIntervalMs: 20 });
      paths.set(store, path);
      return store;
    },
    // A second connection to the same file, as a second process would open it.
    openPeer: async (store) => openSqliteStore(paths.get(store)!, { touchIntervalMs: 20 }),
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
