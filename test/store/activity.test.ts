import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Delivery, NewLoginEntry } from '../../src/store/activity.js';
import { openRedisStore } from '../../src/store/redis.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { KeyStore } from '../../src/store/types.js';
import { redisAvailable, REDIS_SKIP_REASON, startRedis, type RedisServer } from '../helpers/redis-server.js';

const dir = mkdtempSync(join(tmpdir(), 'keygate-activity-'));
let redis: RedisServer | null = null;
const haveRedis = redisAvailable();
if (!haveRedis) console.warn(REDIS_SKIP_REASON);

beforeAll(async () => {
  if (haveRedis) redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const kinds: [string, () => Promise<KeyStore>][] = [
  ['sqlite', async () => openSqliteStore(join(dir, `${randomBytes(4).toString('hex')}.db`))],
  ...(haveRedis ? [['redis', () => openRedisStore(redis!.url, { namespace: `a${randomBytes(4).toString('hex')}` })] as [string, () => Promise<KeyStore>]] : []),
];

const BOUNDS = { maxPerAccount: 5, retentionMs: 60 * 60_000 };

function entry(n: number, extra: Partial<NewLoginEntry> = {}): NewLoginEntry {
  return {
    at: Date.now(),
    account: 'a@x.test',
    keyId: n % 2 === 0 ? 'even' : 'odd',
    protocol: 'imap',
    method: null,
    ip: `192.0.2.${n}`,
    result: n % 3 === 0 ? 'failure' : 'success',
    reason: n % 3 === 0 ? 'unknown_key' : null,
    client: { name: `client-${n}` },
    ...extra,
  };
}

describe.each(kinds)('activity on %s', (_kind, open) => {
  it('history is bounded per account: written past the cap, the newest are read back, newest first, page by page', async () => {
    const store = await open();
    try {
      for (let batch = 0; batch < 3; batch++) await store.activity.appendLogins([1, 2, 3, 4].map((i) => entry(batch * 4 + i)), BOUNDS);
      await store.activity.appendLogins([entry(99, { account: 'b@x.test' })], BOUNDS);
      const all = await store.activity.listLogins({ account: 'a@x.test', limit: 100 }, BOUNDS);
      expect(all.entries.map((e) => e.ip)).toEqual([12, 11, 10, 9, 8].map((n) => `192.0.2.${n}`));
      expect(all.next).toBeNull();

      const seen: string[] = [];
      let cursor: string | undefined;
      for (let pages = 0; pages < 10; pages++) {
        const page = await store.activity.listLogins({ account: 'a@x.test', limit: 2, ...(cursor !== undefined && { before: cursor }) }, BOUNDS);
        seen.push(...page.entries.map((e) => e.ip));
        if (page.next === null) break;
        cursor = page.next;
      }
      expect(seen).toEqual(all.entries.map((e) => e.ip));

      const odd = await store.activity.listLogins({ account: 'a@x.test', keyId: 'odd', limit: 100 }, BOUNDS);
      expect(odd.entries.map((e) => e.ip)).toEqual(['192.0.2.11', '192.0.2.9']);
      const failed = await store.activity.listLogins({ account: 'a@x.test', result: 'failure', limit: 1 }, BOUNDS);
      expect(failed.entries.map((e) => [e.ip, e.reason])).toEqual([['192.0.2.12', 'unknown_key']]);
      expect(failed.next).not.toBeNull();
      const afterLast = await store.activity.listLogins({ account: 'a@x.test', result: 'failure', limit: 1, before: failed.next! }, BOUNDS);
      expect(afterLast.entries.map((e) => e.ip)).toEqual(['192.0.2.9']);
      expect((await store.activity.listLogins({ account: 'a@x.test', since: Date.now() + 60_000, limit: 10 }, BOUNDS)).entries).toEqual([]);
      expect((await store.activity.listLogins({ account: 'b@x.test', limit: 10 }, BOUNDS)).entries).toHaveLength(1);
      expect((await store.activity.listLogins({ account: null, limit: 10 }, BOUNDS)).entries).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('entries past their retention are not shown', async () => {
    const store = await open();
    try {
      await store.activity.appendLogins([entry(1, { at: Date.now() - 2 * 60 * 60_000 }), entry(2)], BOUNDS);
      const page = await store.activity.listLogins({ account: 'a@x.test', limit: 10 }, BOUNDS);
      expect(page.entries.map((e) => e.ip)).toEqual(['192.0.2.2']);
    } finally {
      await store.close();
    }
  });

  it('networks: first, new, seen', async () => {
    const store = await open();
    try {
      expect(await store.activity.addNetwork('k1', '192.0.2.0/24', 1)).toBe('first');
      expect(await store.activity.addNetwork('k1', '192.0.2.0/24', 2)).toBe('seen');
      expect(await store.activity.addNetwork('k1', '198.51.100.0/24', 3)).toBe('new');
      expect(await store.activity.addNetwork('k2', '198.51.100.0/24', 3)).toBe('first');
    } finally {
      await store.close();
    }
  });

  it('the delivery queue: a leased delivery is not handed out twice; rescheduled ones come due again; finished ones leave', async () => {
    const store = await open();
    const now = Date.now();
    const d = (id: string): Delivery => ({ id, endpointId: 'ep1', body: '{}', eventId: id, eventType: 'key.created', attempts: 0, due: now });
    try {
      await store.activity.putEndpoint({ id: 'ep1', url: 'http://127.0.0.1:9/', secret: 's'.repeat(20), events: null, createdAt: new Date(now).toISOString() });
      await store.activity.enqueue([d('a'), d('b')]);
      expect(await store.activity.pendingDeliveries(['ep1', 'other'])).toEqual([2, 0]);
      const first = await store.activity.claimDue(now, 1000, 10);
      expect(first.map((x) => x.id).sort()).toEqual(['a', 'b']);
      expect(await store.activity.claimDue(now + 10, 1000, 10)).toEqual([]);
      await store.activity.finishDelivery('a');
      await store.activity.rescheduleDelivery('b', 1, now + 50);
      expect(await store.activity.claimDue(now + 40, 1000, 10)).toEqual([]);
      expect(await store.activity.claimDue(now + 60, 1000, 10)).toMatchObject([{ id: 'b', attempts: 1 }]);
      // A lease that runs out (a crashed sender) makes it due again.
      expect(await store.activity.claimDue(now + 2000, 1000, 10)).toMatchObject([{ id: 'b' }]);
      await store.activity.setEndpointStatus('ep1', { at: new Date().toISOString(), eventId: 'b', eventType: 'key.created', ok: false, status: 500, error: 'HTTP 500', attempt: 1 });
      expect(await store.activity.endpointStatuses(['ep1', 'nope'])).toMatchObject([{ status: 500 }, null]);
      expect((await store.activity.listEndpoints()).map((e) => e.id)).toEqual(['ep1']);
      expect(await store.activity.deleteEndpoint('ep1')).toBe(true);
      expect(await store.activity.listEndpoints()).toEqual([]);
      expect(await store.activity.deleteEndpoint('ep1')).toBe(false);
    } finally {
      await store.close();
    }
  });
});

describe.each(kinds)('login entries on %s', (_kind, open) => {
  it('read back as written, every field', async () => {
    const store = await open();
    try {
      const full: NewLoginEntry = { ...entry(1), method: 'PLAIN', client: { name: 'Thunderbird', version: '128.0' }, newNetwork: true };
      const bare: NewLoginEntry = { ...entry(2), keyId: null, client: null, method: null, reason: 'unknown_key', result: 'failure' };
      const stranger: NewLoginEntry = { ...entry(3), account: null, username: 'who@x.test', client: { version: '1' } };
      await store.activity.appendLogins([full, bare, stranger], BOUNDS);
      const strip = ({ id: _id, ...e }: { id: string } & NewLoginEntry): NewLoginEntry => e;
      expect((await store.activity.listLogins({ account: 'a@x.test', limit: 10 }, BOUNDS)).entries.map(strip)).toEqual([bare, full]);
      expect((await store.activity.listLogins({ account: null, limit: 10 }, BOUNDS)).entries.map(strip)).toEqual([stranger]);
      // Account names travel through JSON on the way in (one statement counts a batch's accounts).
      const odd = { ...entry(4), account: '"quoted"\\ \u00fcn\u00efcode __proto__@x.test' };
      await store.activity.appendLogins([odd, entry(5, { account: '__proto__' })], BOUNDS);
      expect((await store.activity.listLogins({ account: odd.account, limit: 10 }, BOUNDS)).entries.map(strip)).toEqual([odd]);
      expect((await store.activity.listLogins({ account: '__proto__', limit: 10 }, BOUNDS)).entries.map((e) => e.ip)).toEqual(['192.0.2.5']);
    } finally {
      await store.close();
    }
  });
});

describe('login history in SQLite', () => {
  it('a file written by the first version (one JSON text per entry) is moved to columns on open, ids and all', async () => {
    const path = join(dir, `old-${randomBytes(4).toString('hex')}.db`);
    const db = new Database(path);
    db.exec(`CREATE TABLE login_history (id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL, at INTEGER NOT NULL, entry TEXT NOT NULL, key_id TEXT, result TEXT NOT NULL);
      CREATE INDEX login_history_account ON login_history(account, id); CREATE INDEX login_history_at ON login_history(at);
      CREATE TABLE login_history_counts (account TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;`);
    const old = [entry(1, { newNetwork: true, method: 'LOGIN' }), entry(3)];
    const insert = db.prepare('INSERT INTO login_history (id, account, at, entry, key_id, result) VALUES (?, ?, ?, ?, ?, ?)');
    old.forEach((e, i) => insert.run(40 + i, e.account, e.at, JSON.stringify(e), e.keyId, e.result));
    db.prepare('INSERT INTO login_history_counts VALUES (?, ?)').run('a@x.test', 2);
    db.close();

    const store = await openSqliteStore(path);
    try {
      await store.activity.appendLogins([entry(2)], BOUNDS);
      const page = await store.activity.listLogins({ account: 'a@x.test', limit: 10 }, BOUNDS);
      expect(page.entries.map((e) => e.id)).toEqual(['42', '41', '40']);
      expect(page.entries.map(({ id: _id, ...e }) => e)).toEqual([entry(2, { at: page.entries[0]!.at }), old[1], old[0]]);
    } finally {
      await store.close();
    }
    const after = new Database(path, { readonly: true });
    expect(after.prepare("SELECT name FROM sqlite_master WHERE name LIKE 'login_history%'").all()).toEqual([]);
    after.close();
  });

  it('entries past their retention are deleted, not only hidden, and leave the count', async () => {
    const path = join(dir, `sweep-${randomBytes(4).toString('hex')}.db`);
    const store = await openSqliteStore(path);
    try {
      const old = Date.now() - 2 * 60 * 60_000;
      await store.activity.appendLogins([entry(1, { at: old }), entry(2, { at: old + 1 }), entry(3), entry(4)], BOUNDS);
    } finally {
      await store.close();
    }
    const db = new Database(path, { readonly: true });
    expect(db.prepare('SELECT ip FROM logins ORDER BY id').all()).toEqual([{ ip: '192.0.2.3' }, { ip: '192.0.2.4' }]);
    expect(db.prepare('SELECT account, n FROM login_accounts').all()).toEqual([{ account: 'a@x.test', n: 2 }]);
    db.close();
  });
});
