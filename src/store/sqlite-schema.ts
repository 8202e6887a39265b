import type Database from 'better-sqlite3';
import { orderMs } from './paging.js';

/**
 * The SQLite schema, version 2, and the step from version 1.
 *
 * Keys sort by (order_ms, seq): creation time, then creation order. `seq` is
 * the rowid (INTEGER PRIMARY KEY), so VACUUM keeps it. Every list and count
 * reads an index range, never the whole table:
 *   keys_order / keys_live_order / keys_revoked_order   pages of every / non-revoked / revoked key
 *   keys_account_order                                 pages of one account's keys
 *   keys_account_live                                  one account's non-revoked keys by expiry (active count, key limit)
 *   keys_device                                        one device's non-revoked keys (device replacement)
 *   keys_expiry                                        non-revoked keys by expiry (the expired count)
 * `counters` holds what `countKeys` reports, kept in the same transaction as
 * each write: keys, revoked, and expired up to `expired_through` (ms).
 */
export const SCHEMA_VERSION = 2;

const KEYS_TABLE = `
CREATE TABLE keys (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  hash TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  account TEXT,
  scopes TEXT NOT NULL,
  created_at TEXT NOT NULL,
  expires_at TEXT,
  allowed_ips TEXT,
  revoked_at TEXT,
  last_used_at TEXT,
  last_used_ip TEXT,
  last_used_protocol TEXT,
  platform TEXT,
  device_id TEXT,
  rotated_from TEXT,
  order_ms INTEGER NOT NULL,
  expires_ms INTEGER,
  canary INTEGER NOT NULL DEFAULT 0,
  limits TEXT
)`;

/**
 * Key columns added after a schema shipped (guard: canary, sending limits):
 * added in place to a file that lacks them, before any rebuild reads it.
 */
const ADDED_KEY_COLUMNS = [
  ['canary', 'INTEGER NOT NULL DEFAULT 0'],
  ['limits', 'TEXT'],
] as const;

function addMissingKeyColumns(db: Database.Database): void {
  const columns = new Set((db.pragma('table_info(keys)') as { name: string }[]).map((c) => c.name));
  if (columns.size === 0) return; // no keys table yet
  for (const [name, type] of ADDED_KEY_COLUMNS) if (!columns.has(name)) db.exec(`ALTER TABLE keys ADD COLUMN ${name} ${type}`);
}

const KEY_INDEXES = `
CREATE INDEX IF NOT EXISTS keys_order ON keys(order_ms, seq);
CREATE INDEX IF NOT EXISTS keys_live_order ON keys(order_ms, seq) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS keys_revoked_order ON keys(order_ms, seq) WHERE revoked_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS keys_account_order ON keys(account, order_ms, seq);
CREATE INDEX IF NOT EXISTS keys_account_live ON keys(account, expires_ms) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS keys_device ON keys(account, device_id) WHERE revoked_at IS NULL AND device_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS keys_expiry ON keys(expires_ms) WHERE revoked_at IS NULL AND expires_ms IS NOT NULL;
`;

const OTHER_TABLES = `
CREATE TABLE IF NOT EXISTS accounts (
  address TEXT PRIMARY KEY,
  display_name TEXT,
  disabled INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  upstream TEXT
);
CREATE INDEX IF NOT EXISTS accounts_with_upstream ON accounts(address) WHERE upstream IS NOT NULL;
CREATE TABLE IF NOT EXISTS aliases (
  alias TEXT PRIMARY KEY,
  address TEXT NOT NULL REFERENCES accounts(address) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS aliases_address ON aliases(address);
CREATE TABLE IF NOT EXISTS kv (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS kv_expires ON kv(expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
`;

/** When a key expires, in ms; an unreadable expiry counts as already past (isActive reads it so too). */
export function expiresMs(expiresAt: string | null): number | null {
  if (expiresAt === null) return null;
  const ms = Date.parse(expiresAt);
  return Number.isFinite(ms) ? ms : Number.MIN_SAFE_INTEGER;
}

/**
 * Brings the file to SCHEMA_VERSION. A new file gets the schema; a version-1
 * file (keys without seq, no counters) is rebuilt in one transaction: every
 * key is kept, in its creation order, and the counters are counted once. That
 * one step reads every key; every later start reads none.
 */
export function migrate(db: Database.Database, now = Date.now()): { migratedKeys: number } | null {
  if ((db.pragma('user_version', { simple: true }) as number) >= SCHEMA_VERSION) {
    db.exec(OTHER_TABLES + KEY_INDEXES);
    addMissingKeyColumns(db);
    return null;
  }
  db.function('kg_order_ms', { deterministic: true }, (createdAt: unknown) => orderMs(String(createdAt)));
  db.function('kg_expires_ms', { deterministic: true }, (expiresAt: unknown) => expiresMs(expiresAt === null ? null : String(expiresAt)));
  return db.transaction(() => {
    // Another process may have migrated while this one waited for the lock.
    if ((db.pragma('user_version', { simple: true }) as number) >= SCHEMA_VERSION) return null;
    db.exec(OTHER_TABLES);
    const v1 = db.prepare<[], { n: number }>("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'keys'").get()!.n > 0;
    if (v1) {
      addMissingKeyColumns(db);
      db.exec('ALTER TABLE keys RENAME TO keys_v1');
    }
    db.exec(KEYS_TABLE);
    if (v1) {
      db.exec(`INSERT INTO keys (id, hash, name, account, scopes, created_at, expires_at, allowed_ips, revoked_at, last_used_at, last_used_ip,
          last_used_protocol, platform, device_id, rotated_from, order_ms, expires_ms, canary, limits)
        SELECT id, hash, name, account, scopes, created_at, expires_at, allowed_ips, revoked_at, last_used_at, last_used_ip,
          last_used_protocol, platform, device_id, rotated_from, kg_order_ms(created_at), kg_expires_ms(expires_at), canary, limits
        FROM keys_v1 ORDER BY rowid`);
      db.exec('DROP TABLE keys_v1');
    }
    db.exec(KEY_INDEXES);
    const count = (where: string, ...params: unknown[]): number => db.prepare<unknown[], { n: number }>(`SELECT count(*) AS n FROM keys WHERE ${where}`).get(...params)!.n;
    const set = db.prepare<[string, number]>('INSERT OR REPLACE INTO counters VALUES (?, ?)');
    set.run('keys', count('1'));
    set.run('revoked', count('revoked_at IS NOT NULL'));
    set.run('expired', count('revoked_at IS NULL AND expires_ms <= ?', now));
    set.run('expired_through', now);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
    return v1 ? { migratedKeys: count('1') } : null;
  }).immediate();
}
