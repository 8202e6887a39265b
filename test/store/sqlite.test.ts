import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
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
});
