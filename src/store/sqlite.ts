import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { normalizeAddress, uniqueAddresses, type AccountRecord, type KeyRecord, type KeyUse, type SendingLimits } from '../keys/record.js';
import type { Scope } from '../keys/scopes.js';
import { ConflictError, NotFoundError, StoreMissingError, StoreUnavailableError } from './errors.js';
import type { ActivityStore } from './activity.js';
import { SqliteActivity } from './sqlite-activity.js';
import { TouchBuffer } from './touch-buffer.js';
import type { AccountPatch, KeyStore, StoreEvent } from './types.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY,
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
  canary INTEGER NOT NULL DEFAULT 0,
  limits TEXT
);
CREATE INDEX IF NOT EXISTS keys_account ON keys(account, created_at);
CREATE TABLE IF NOT EXISTS accounts (
  address TEXT PRIMARY KEY,
  display_name TEXT,
  disabled INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  upstream TEXT
);
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
`;

interface KeyRow {
  id: string;
  hash: string;
  name: string;
  account: string | null;
  scopes: string;
  created_at: string;
  expires_at: string | null;
  allowed_ips: string | null;
  revoked_at: string | null;
  last_used_at: string | null;
  last_used_ip: string | null;
  last_used_protocol: string | null;
  platform: string | null;
  device_id: string | null;
  rotated_from: string | null;
  canary: number;
  limits: string | null;
}

/** Columns added after the first release: added in place to an older file when it is opened. */
const ADDED_KEY_COLUMNS = [
  ['canary', 'INTEGER NOT NULL DEFAULT 0'],
  ['limits', 'TEXT'],
] as const;

interface AccountRow {
  address: string;
  display_name: string | null;
  disabled: number;
  created_at: string;
  upstream: string | null;
  aliases: string | null;
}

function toKey(r: KeyRow): KeyRecord {
  return {
    id: r.id,
    hash: r.hash,
    name: r.name,
    account: r.account,
    scopes: JSON.parse(r.scopes) as Scope[],
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    allowedIps: r.allowed_ips === null ? null : (JSON.parse(r.allowed_ips) as string[]),
    revokedAt: r.revoked_at,
    lastUsedAt: r.last_used_at,
    lastUsedIp: r.last_used_ip,
    lastUsedProtocol: r.last_used_protocol,
    platform: r.platform,
    deviceId: r.device_id,
    rotatedFrom: r.rotated_from,
    canary: r.canary === 1,
    limits: r.limits === null ? null : (JSON.parse(r.limits) as SendingLimits),
  };
}

function keyParams(k: KeyRecord): KeyRow {
  return {
    id: k.id,
    hash: k.hash,
    name: k.name,
    account: k.account,
    scopes: JSON.stringify(k.scopes),
    created_at: k.createdAt,
    expires_at: k.expiresAt,
    allowed_ips: k.allowedIps === null ? null : JSON.stringify(k.allowedIps),
    revoked_at: k.revokedAt,
    last_used_at: k.lastUsedAt,
    last_used_ip: k.lastUsedIp,
    last_used_protocol: k.lastUsedProtocol,
    platform: k.platform,
    device_id: k.deviceId,
    rotated_from: k.rotatedFrom,
    canary: k.canary ? 1 : 0,
    limits: k.limits ? JSON.stringify(k.limits) : null,
  };
}

function toAccount(r: AccountRow): AccountRecord {
  return {
    address: r.address,
    aliases: r.aliases ? r.aliases.split('\n').sort() : [],
    displayName: r.display_name,
    disabled: r.disabled === 1,
    createdAt: r.created_at,
    upstream: r.upstream === null ? null : (JSON.parse(r.upstream) as Record<string, unknown>),
  };
}

const ACCOUNT_SELECT = `SELECT a.*, (SELECT group_concat(alias, char(10)) FROM aliases WHERE address = a.address) AS aliases FROM accounts a`;

export interface SqliteStoreOptions {
  touchIntervalMs?: number;
  onError?: (err: unknown) => void;
  /** Open an existing file only: a missing one is a StoreMissingError, and nothing (no file, no directory) is created. */
  mustExist?: boolean;
}

/** The embedded default store: one SQLite file in WAL mode. */
export class SqliteStore implements KeyStore {
  readonly kind = 'sqlite' as const;
  readonly activity: ActivityStore;
  private readonly db: Database.Database;
  private readonly events = new EventEmitter();
  private readonly touches: TouchBuffer;
  private closed = false;
  private lastPurge = 0;
  private readonly q;

  constructor(path: string, options: SqliteStoreOptions = {}) {
    if (path !== ':memory:') {
      if (options.mustExist && !existsSync(path)) throw new StoreMissingError(resolve(path));
      if (!options.mustExist) mkdirSync(dirname(path), { recursive: true });
    }
    try {
      this.db = new Database(path, { fileMustExist: options.mustExist === true });
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.db.pragma('foreign_keys = ON');
      this.db.pragma('busy_timeout = 5000');
      this.db.exec(SCHEMA);
      const columns = new Set((this.db.pragma('table_info(keys)') as { name: string }[]).map((c) => c.name));
      for (const [name, type] of ADDED_KEY_COLUMNS) if (!columns.has(name)) this.db.exec(`ALTER TABLE keys ADD COLUMN ${name} ${type}`);
    } catch (err) {
      throw new StoreUnavailableError(`cannot open SQLite database ${path}: ${(err as Error).message}`, { cause: err });
    }
    const db = this.db;
    this.q = {
      insertKey: db.prepare(`INSERT INTO keys (id, hash, name, account, scopes, created_at, expires_at, allowed_ips, revoked_at,
        last_used_at, last_used_ip, last_used_protocol, platform, device_id, rotated_from, canary, limits)
        VALUES (@id, @hash, @name, @account, @scopes, @created_at, @expires_at, @allowed_ips,
        @revoked_at, @last_used_at, @last_used_ip, @last_used_protocol, @platform, @device_id, @rotated_from, @canary, @limits)`),
      byHash: db.prepare<[string], KeyRow>('SELECT * FROM keys WHERE hash = ?'),
      byId: db.prepare<[string], KeyRow>('SELECT * FROM keys WHERE id = ?'),
      exists: db.prepare<[string, string], { n: number }>('SELECT count(*) AS n FROM keys WHERE id = ? OR hash = ?'),
      listAll: db.prepare<[], KeyRow>('SELECT * FROM keys ORDER BY created_at DESC, rowid DESC'),
      listByAccount: db.prepare<[string], KeyRow>('SELECT * FROM keys WHERE account = ? ORDER BY created_at DESC, rowid DESC'),
      revoke: db.prepare<[string, string]>('UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
      revokeByAccount: db.prepare<[string, string]>('UPDATE keys SET revoked_at = ? WHERE account = ? AND revoked_at IS NULL RETURNING id'),
      liveByDevice: db.prepare<[string, string], KeyRow>(
        'SELECT * FROM keys WHERE account = ? AND device_id = ? AND revoked_at IS NULL ORDER BY created_at DESC, rowid DESC',
      ),
      touch: db.prepare('UPDATE keys SET last_used_at = @at, last_used_ip = @ip, last_used_protocol = @protocol WHERE id = @id'),
      account: db.prepare<[string], AccountRow>(`${ACCOUNT_SELECT} WHERE a.address = ?`),
      accounts: db.prepare<[], AccountRow>(`${ACCOUNT_SELECT} ORDER BY a.address`),
      aliasOwner: db.prepare<[string], { address: string }>('SELECT address FROM aliases WHERE alias = ?'),
      insertAccount: db.prepare('INSERT INTO accounts VALUES (@address, @display_name, @disabled, @created_at, @upstream)'),
      insertAlias: db.prepare<[string, string]>('INSERT INTO aliases VALUES (?, ?)'),
      deleteAliases: db.prepare<[string]>('DELETE FROM aliases WHERE address = ?'),
      updateAccount: db.prepare('UPDATE accounts SET display_name = @display_name, disabled = @disabled, upstream = @upstream WHERE address = @address'),
      deleteAccount: db.prepare<[string]>('DELETE FROM accounts WHERE address = ?'),
      getValue: db.prepare<[string, number], { value: string }>('SELECT value FROM kv WHERE name = ? AND (expires_at IS NULL OR expires_at > ?)'),
      putValue: db.prepare<[string, string, number | null]>(
        'INSERT INTO kv VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at',
      ),
      putValueIfAbsent: db.prepare<[{ name: string; value: string; expires: number | null; now: number }]>(
        `INSERT INTO kv VALUES (@name, @value, @expires) ON CONFLICT(name) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
         WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= @now`,
      ),
      takeValue: db.prepare<[string], { value: string; expires_at: number | null }>('DELETE FROM kv WHERE name = ? RETURNING value, expires_at'),
      deleteValue: db.prepare<[string]>('DELETE FROM kv WHERE name = ?'),
      addToCounter: db.prepare<[{ name: string; amount: number; expires: number | null; now: number }], { value: string }>(
        // JavaScript numbers bind as REAL: cast, so the stored text is "3", not "3.0".
        `INSERT INTO kv VALUES (@name, CAST(@amount AS INTEGER), @expires) ON CONFLICT(name) DO UPDATE SET
           value = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= @now THEN excluded.value ELSE CAST(kv.value AS INTEGER) + CAST(@amount AS INTEGER) END,
           expires_at = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= @now THEN excluded.expires_at ELSE kv.expires_at END
         RETURNING value`,
      ),
      deleteValueIf: db.prepare<[string, string]>('DELETE FROM kv WHERE name = ? AND value = ?'),
      purgeValues: db.prepare<[number]>('DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?'),
    };
    this.touches = new TouchBuffer(async (batch) => this.writeTouches(batch), options.touchIntervalMs ?? 1000, options.onError);
    this.activity = this.run(() => new SqliteActivity(db, (fn) => this.run(fn)));
  }

  private run<T>(fn: () => T): T {
    if (this.closed) throw new StoreUnavailableError('SQLite store is closed');
    try {
      return fn();
    } catch (err) {
      if (err instanceof ConflictError || err instanceof NotFoundError || err instanceof StoreUnavailableError) throw err;
      if ((err as { code?: string }).code?.startsWith('SQLITE_CONSTRAINT')) throw new ConflictError((err as Error).message);
      throw new StoreUnavailableError(`SQLite error: ${(err as Error).message}`, { cause: err });
    }
  }

  private emit(event: StoreEvent): void {
    this.events.emit('event', event);
  }

  async ping(): Promise<void> {
    this.run(() => this.db.prepare('SELECT 1').get());
  }

  async createKey(record: KeyRecord): Promise<void> {
    this.run(() => {
      if (this.q.exists.get(record.id, record.hash)!.n > 0) throw new ConflictError('a key with this id or hash exists');
      this.q.insertKey.run(keyParams(record));
    });
  }

  async findByHash(hash: string): Promise<KeyRecord | null> {
    const row = this.run(() => this.q.byHash.get(hash));
    return row ? toKey(row) : null;
  }

  async getKey(id: string): Promise<KeyRecord | null> {
    const row = this.run(() => this.q.byId.get(id));
    return row ? toKey(row) : null;
  }

  async getKeys(ids: readonly string[]): Promise<(KeyRecord | null)[]> {
    // One statement with the ids as a JSON array: no bound-parameter limit, however many sessions are open.
    const rows = this.run(() => this.db.prepare<[string], KeyRow>('SELECT * FROM keys WHERE id IN (SELECT value FROM json_each(?))').all(JSON.stringify(ids)));
    const byId = new Map(rows.map((r) => [r.id, toKey(r)]));
    return ids.map((id) => byId.get(id) ?? null);
  }

  async listKeys(filter: { account?: string } = {}): Promise<KeyRecord[]> {
    const rows = this.run(() =>
      filter.account !== undefined ? this.q.listByAccount.all(normalizeAddress(filter.account)) : this.q.listAll.all(),
    );
    return rows.map(toKey);
  }

  async revokeKey(id: string, at: string): Promise<KeyRecord> {
    const { row, changed } = this.run(
      this.db.transaction(() => {
        const changed = this.q.revoke.run(at, id).changes > 0;
        const row = this.q.byId.get(id);
        if (!row) throw new NotFoundError(`key ${id}`);
        return { row, changed };
      }),
    );
    const key = toKey(row);
    if (changed) this.emit({ type: 'key-revoked', id, account: key.account });
    return key;
  }

  async rotateKey(oldId: string, replacement: KeyRecord, at: string): Promise<KeyRecord> {
    if (replacement.rotatedFrom !== oldId) throw new ConflictError('replacement.rotatedFrom must name the rotated key');
    const old = this.run(
      this.db.transaction(() => {
        const row = this.q.byId.get(oldId);
        if (!row) throw new NotFoundError(`key ${oldId}`);
        if (row.revoked_at !== null) throw new ConflictError(`key ${oldId} is not active`);
        if (this.q.exists.get(replacement.id, replacement.hash)!.n > 0) throw new ConflictError('a key with this id or hash exists');
        this.q.revoke.run(at, oldId);
        this.q.insertKey.run(keyParams(replacement));
        return toKey(row);
      }).immediate,
    );
    this.emit({ type: 'key-revoked', id: oldId, account: old.account });
    return replacement;
  }

  async replaceDeviceKey(replacement: KeyRecord, at: string): Promise<{ key: KeyRecord; revoked: KeyRecord[] }> {
    const { account, deviceId } = replacement;
    if (account === null || deviceId === null) throw new ConflictError('a device key needs an account and a deviceId');
    // IMMEDIATE takes the write lock before the read, so a concurrent replace
    // (this process or another on the same file) waits instead of reading the
    // same live keys.
    const out = this.run(
      this.db.transaction(() => {
        if (this.q.exists.get(replacement.id, replacement.hash)!.n > 0) throw new ConflictError('a key with this id or hash exists');
        const live = this.q.liveByDevice.all(account, deviceId);
        for (const row of live) this.q.revoke.run(at, row.id);
        const key: KeyRecord = { ...replacement, rotatedFrom: live[0]?.id ?? null };
        this.q.insertKey.run(keyParams(key));
        return { key, revoked: live.map((row) => toKey({ ...row, revoked_at: at })) };
      }).immediate,
    );
    for (const k of out.revoked) this.emit({ type: 'key-revoked', id: k.id, account: k.account });
    return out;
  }

  touchKey(id: string, use: KeyUse): void {
    this.touches.add(id, use);
  }

  flushTouches(): Promise<void> {
    return this.touches.flush();
  }

  private async writeTouches(batch: Map<string, KeyUse>): Promise<void> {
    this.run(
      this.db.transaction(() => {
        for (const [id, use] of batch) this.q.touch.run({ id, at: use.at, ip: use.ip, protocol: use.protocol });
      }),
    );
  }

  async importKey(record: KeyRecord): Promise<'imported' | 'exists'> {
    return this.run(
      this.db.transaction(() => {
        if (this.q.exists.get(record.id, record.hash)!.n > 0) return 'exists' as const;
        if (record.account !== null) this.ensureAccountSync(record.account, record.createdAt);
        this.q.insertKey.run(keyParams(record));
        return 'imported' as const;
      }).immediate,
    );
  }

  private nameTaken(name: string, except?: string): boolean {
    const asAddress = this.q.account.get(name);
    if (asAddress && asAddress.address !== except) return true;
    const owner = this.q.aliasOwner.get(name);
    return owner !== undefined && owner.address !== except;
  }

  private insertAccountSync(a: AccountRecord): void {
    if (this.nameTaken(a.address)) throw new ConflictError(`address ${a.address} is taken`);
    this.q.insertAccount.run({
      address: a.address,
      display_name: a.displayName,
      disabled: a.disabled ? 1 : 0,
      created_at: a.createdAt,
      upstream: a.upstream === null ? null : JSON.stringify(a.upstream),
    });
    for (const alias of a.aliases) {
      if (alias === a.address || this.nameTaken(alias)) throw new ConflictError(`alias ${alias} is taken`);
      this.q.insertAlias.run(alias, a.address);
    }
  }

  private ensureAccountSync(address: string, now: string): AccountRow {
    const existing = this.q.account.get(address);
    if (existing) return existing;
    this.insertAccountSync({ address, aliases: [], displayName: null, disabled: false, createdAt: now, upstream: null });
    return this.q.account.get(address)!;
  }

  async createAccount(account: AccountRecord): Promise<AccountRecord> {
    const a = normalizeAccount(account);
    this.run(this.db.transaction(() => this.insertAccountSync(a)).immediate);
    return (await this.getAccount(a.address))!;
  }

  async ensureAccount(address: string, now = new Date().toISOString()): Promise<AccountRecord> {
    const addr = normalizeAddress(address);
    return toAccount(this.run(this.db.transaction(() => this.ensureAccountSync(addr, now)).immediate));
  }

  async getAccount(address: string): Promise<AccountRecord | null> {
    const row = this.run(() => this.q.account.get(normalizeAddress(address)));
    return row ? toAccount(row) : null;
  }

  async getAccounts(addresses: readonly string[]): Promise<(AccountRecord | null)[]> {
    const wanted = addresses.map(normalizeAddress);
    const rows = this.run(() => this.db.prepare<[string], AccountRow>(`${ACCOUNT_SELECT} WHERE a.address IN (SELECT value FROM json_each(?))`).all(JSON.stringify(wanted)));
    const byAddress = new Map(rows.map((r) => [r.address, toAccount(r)]));
    return wanted.map((a) => byAddress.get(a) ?? null);
  }

  async resolveAccount(name: string): Promise<AccountRecord | null> {
    const n = normalizeAddress(name);
    const row = this.run(() => this.q.account.get(n) ?? this.q.account.get(this.q.aliasOwner.get(n)?.address ?? ''));
    return row ? toAccount(row) : null;
  }

  async listAccounts(): Promise<AccountRecord[]> {
    return this.run(() => this.q.accounts.all()).map(toAccount);
  }

  async updateAccount(address: string, patch: AccountPatch): Promise<AccountRecord> {
    const addr = normalizeAddress(address);
    const row = this.run(
      this.db.transaction(() => {
        const cur = this.q.account.get(addr);
        if (!cur) throw new NotFoundError(`account ${addr}`);
        const a = toAccount(cur);
        this.q.updateAccount.run({
          address: addr,
          display_name: patch.displayName !== undefined ? patch.displayName : a.displayName,
          disabled: (patch.disabled ?? a.disabled) ? 1 : 0,
          upstream: patch.upstream !== undefined ? (patch.upstream === null ? null : JSON.stringify(patch.upstream)) : cur.upstream,
        });
        if (patch.aliases !== undefined) {
          this.q.deleteAliases.run(addr);
          for (const alias of uniqueAddresses(patch.aliases)) {
            if (alias === addr || this.nameTaken(alias)) throw new ConflictError(`alias ${alias} is taken`);
            this.q.insertAlias.run(alias, addr);
          }
        }
        return this.q.account.get(addr)!;
      }).immediate,
    );
    this.emit({ type: 'account-changed', address: addr });
    return toAccount(row);
  }

  async deleteAccount(address: string, at: string): Promise<void> {
    const addr = normalizeAddress(address);
    const revoked = this.run(
      this.db.transaction(() => {
        if (!this.q.account.get(addr)) throw new NotFoundError(`account ${addr}`);
        const ids = this.q.revokeByAccount.all(at, addr) as { id: string }[];
        this.q.deleteAccount.run(addr);
        return ids.map((r) => r.id);
      }).immediate,
    );
    for (const id of revoked) this.emit({ type: 'key-revoked', id, account: addr });
    this.emit({ type: 'account-changed', address: addr });
  }

  async putValue(name: string, value: string, ttlMs: number | null, options: { onlyIfAbsent?: boolean } = {}): Promise<boolean> {
    const now = Date.now();
    const expires = ttlMs === null ? null : now + ttlMs;
    return this.run(() => {
      // Expired rows are dropped as writes go by, a minute apart at most: reads ignore them anyway.
      if (now - this.lastPurge > 60_000) {
        this.lastPurge = now;
        this.q.purgeValues.run(now);
      }
      if (options.onlyIfAbsent) return this.q.putValueIfAbsent.run({ name, value, expires, now }).changes > 0;
      this.q.putValue.run(name, value, expires);
      return true;
    });
  }

  async getValue(name: string): Promise<string | null> {
    return this.run(() => this.q.getValue.get(name, Date.now())?.value ?? null);
  }

  async takeValue(name: string): Promise<string | null> {
    const row = this.run(() => this.q.takeValue.get(name));
    return row && (row.expires_at === null || row.expires_at > Date.now()) ? row.value : null;
  }

  async deleteValue(name: string, ifValue?: string): Promise<boolean> {
    return this.run(() => (ifValue === undefined ? this.q.deleteValue.run(name) : this.q.deleteValueIf.run(name, ifValue)).changes > 0);
  }

  async addToCounter(name: string, amount: number, ttlMs: number | null): Promise<number> {
    const now = Date.now();
    const row = this.run(() => this.q.addToCounter.get({ name, amount: Math.trunc(amount), expires: ttlMs === null ? null : now + ttlMs, now }));
    return Number(row!.value);
  }

  subscribe(listener: (event: StoreEvent) => void): () => void {
    this.events.on('event', listener);
    return () => this.events.off('event', listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.touches.stop();
    await this.touches.flush().catch(() => {});
    this.closed = true;
    this.db.close();
  }
}

function normalizeAccount(a: AccountRecord): AccountRecord {
  return { ...a, address: normalizeAddress(a.address), aliases: uniqueAddresses(a.aliases) };
}

export function openSqliteStore(path: string, options?: SqliteStoreOptions): KeyStore {
  return new SqliteStore(path, options);
}
