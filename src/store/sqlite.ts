import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { isActive, normalizeAddress, uniqueAddresses, type AccountRecord, type KeyRecord, type KeyUse, type SendingLimits } from '../keys/record.js';
import type { Scope } from '../keys/scopes.js';
import { ConflictError, InvalidCursorError, KeyLimitError, NotFoundError, StoreMissingError, StoreUnavailableError } from './errors.js';
import { accountScan, encodeAccountCursor, encodeKeyCursor, keyScan, MAX_ORDER_MS, orderMs, PAGE_MAX, SCAN_BUDGET, type KeyScan } from './paging.js';
import { expiresMs, migrate } from './sqlite-schema.js';
import type { ActivityStore } from './activity.js';
import { SqliteActivity } from './sqlite-activity.js';
import { TouchBuffer } from './touch-buffer.js';
import type { AccountPatch, AccountQuery, KeyCounts, KeyQuery, KeyStore, Page, StoreEvent, StoreLimits } from './types.js';

interface KeyRow {
  seq?: number;
  order_ms?: number;
  expires_ms?: number | null;
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

function keyParams(k: KeyRecord): Omit<KeyRow, 'seq'> & { seq: null } {
  return {
    seq: null,
    order_ms: orderMs(k.createdAt),
    expires_ms: expiresMs(k.expiresAt),
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

export interface SqliteStoreOptions extends StoreLimits {
  touchIntervalMs?: number;
  onError?: (err: unknown) => void;
  /** Open an existing file only: a missing one is a StoreMissingError, and nothing (no file, no directory) is created. */
  mustExist?: boolean;
  /** Told when opening the file moved older data to this schema (see sqlite-schema.ts). */
  onMigration?: (message: string, details: Record<string, unknown>) => void;
}

const KEY_COLUMNS = `seq, id, hash, name, account, scopes, created_at, expires_at, allowed_ips, revoked_at, last_used_at, last_used_ip,
  last_used_protocol, platform, device_id, rotated_from, order_ms, expires_ms, canary, limits`;

/** The most of the file read through a memory map (1 GiB: about two million keys). */
const MMAP_BYTES = 2 ** 30;

/** Last uses written per transaction. */
const TOUCH_CHUNK = 500;

/** Which index a page of keys walks. */
type KeySource = 'all' | 'live' | 'revoked' | 'account';
const SOURCE_WHERE: Record<KeySource, string> = {
  all: '',
  live: 'revoked_at IS NULL AND',
  revoked: 'revoked_at IS NOT NULL AND',
  account: 'account = @account AND',
};

interface PositionParams {
  ms: number;
  seq: number;
  account: string | null;
  n: number;
}

/** The embedded default store: one SQLite file in WAL mode. */
export class SqliteStore implements KeyStore {
  readonly kind = 'sqlite' as const;
  readonly activity: ActivityStore;
  private readonly db: Database.Database;
  private readonly events = new EventEmitter();
  private readonly touches: TouchBuffer;
  private readonly keyLimit: number | null;
  private closed = false;
  private lastPurge = 0;
  private readonly q;
  private readonly pages;

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
      // Reads through a memory map, not a read() per page: at a million keys the B-trees outgrow
      // the page cache, and a lookup's tail stays at memory speed. The mapped pages are the
      // kernel's page cache (RssFile, reclaimable), not the process's own memory.
      this.db.pragma(`mmap_size = ${MMAP_BYTES}`);
      const migrated = migrate(this.db);
      if (migrated) options.onMigration?.('Migrated the SQLite store to schema 2', { keys: migrated.migratedKeys });
    } catch (err) {
      throw new StoreUnavailableError(`cannot open SQLite database ${path}: ${(err as Error).message}`, { cause: err });
    }
    this.keyLimit = options.keysPerAccount ?? null;
    const db = this.db;
    this.q = {
      insertKey: db.prepare(`INSERT INTO keys (${KEY_COLUMNS}) VALUES (@seq, @id, @hash, @name, @account, @scopes, @created_at, @expires_at, @allowed_ips,
        @revoked_at, @last_used_at, @last_used_ip, @last_used_protocol, @platform, @device_id, @rotated_from, @order_ms, @expires_ms,
        @canary, @limits)`),
      byHash: db.prepare<[string], KeyRow>('SELECT * FROM keys WHERE hash = ?'),
      byId: db.prepare<[string], KeyRow>('SELECT * FROM keys WHERE id = ?'),
      exists: db.prepare<[string, string], { n: number }>('SELECT count(*) AS n FROM keys WHERE id = ? OR hash = ?'),
      revoke: db.prepare<[string, number]>('UPDATE keys SET revoked_at = ? WHERE seq = ? AND revoked_at IS NULL'),
      // Two index ranges rather than an OR, so neither walks the account's revoked keys.
      activeNoExpiry: db.prepare<[string], KeyRow>('SELECT * FROM keys WHERE account = ? AND revoked_at IS NULL AND expires_ms IS NULL'),
      activeUnexpired: db.prepare<[string, number], KeyRow>('SELECT * FROM keys WHERE account = ? AND revoked_at IS NULL AND expires_ms > ?'),
      countNoExpiry: db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM keys WHERE account = ? AND revoked_at IS NULL AND expires_ms IS NULL'),
      countUnexpired: db.prepare<[string, number], { n: number }>('SELECT count(*) AS n FROM keys WHERE account = ? AND revoked_at IS NULL AND expires_ms > ?'),
      liveByAccount: db.prepare<[string], KeyRow>('SELECT * FROM keys WHERE account = ? AND revoked_at IS NULL'),
      liveByDevice: db.prepare<[string, string], KeyRow>(
        'SELECT * FROM keys WHERE account = ? AND device_id = ? AND revoked_at IS NULL ORDER BY order_ms DESC, seq DESC',
      ),
      touch: db.prepare('UPDATE keys SET last_used_at = @at, last_used_ip = @ip, last_used_protocol = @protocol WHERE id = @id'),
      counters: db.prepare<[], { name: string; value: number }>('SELECT name, value FROM counters'),
      counter: db.prepare<[string], { value: number }>('SELECT value FROM counters WHERE name = ?'),
      addCounter: db.prepare<[string, number]>('INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value'),
      setCounter: db.prepare<[string, number]>('INSERT OR REPLACE INTO counters VALUES (?, ?)'),
      expiredBetween: db.prepare<[number, number], { n: number }>(
        'SELECT count(*) AS n FROM keys WHERE revoked_at IS NULL AND expires_ms > ? AND expires_ms <= ?',
      ),
      account: db.prepare<[string], AccountRow>(`${ACCOUNT_SELECT} WHERE a.address = ?`),
      accountsPage: db.prepare<{ after: string; prefix: string; n: number }, AccountRow>(
        `${ACCOUNT_SELECT} WHERE a.address > @after AND a.address >= @prefix ORDER BY a.address LIMIT @n`,
      ),
      accountsWithUpstreamPage: db.prepare<{ after: string; prefix: string; n: number }, AccountRow>(
        `${ACCOUNT_SELECT} WHERE a.upstream IS NOT NULL AND a.address > @after AND a.address >= @prefix ORDER BY a.address LIMIT @n`,
      ),
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
    // Keyset pages: the rest of the cursor's millisecond by seq, then everything older. (SQLite
    // ranges a row-value comparison on its first column only, so one query would walk a long
    // run of keys created in the same millisecond, such as a bulk import.)
    const page = (source: KeySource) => ({
      sameMs: db.prepare<PositionParams, KeyRow>(`SELECT * FROM keys WHERE ${SOURCE_WHERE[source]} order_ms = @ms AND seq < @seq ORDER BY seq DESC LIMIT @n`),
      older: db.prepare<PositionParams, KeyRow>(`SELECT * FROM keys WHERE ${SOURCE_WHERE[source]} order_ms < @ms ORDER BY order_ms DESC, seq DESC LIMIT @n`),
    });
    this.pages = { all: page('all'), live: page('live'), revoked: page('revoked'), account: page('account') };
    this.touches = new TouchBuffer(async (batch) => this.writeTouches(batch), options.touchIntervalMs ?? 1000, options.onError);
    this.activity = this.run(() => new SqliteActivity(db, (fn) => this.run(fn)));
  }

  private run<T>(fn: () => T): T {
    if (this.closed) throw new StoreUnavailableError('SQLite store is closed');
    try {
      return fn();
    } catch (err) {
      if (err instanceof ConflictError || err instanceof NotFoundError || err instanceof StoreUnavailableError || err instanceof InvalidCursorError) throw err;
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

  // ---- writes: every key write goes through these three, inside a transaction ----

  /** Inserts the record and counts it. */
  private store(record: KeyRecord): void {
    this.q.insertKey.run(keyParams(record));
    this.q.addCounter.run('keys', 1);
    if (record.revokedAt !== null) {
      this.q.addCounter.run('revoked', 1);
      return;
    }
    const e = expiresMs(record.expiresAt);
    if (e !== null && e <= this.expiredThrough()) this.q.addCounter.run('expired', 1);
  }

  /** Revokes a non-revoked row and moves it between the counts; false when it was revoked already. */
  private revokeRow(row: KeyRow, at: string): boolean {
    if (this.q.revoke.run(at, row.seq!).changes === 0) return false;
    this.q.addCounter.run('revoked', 1);
    if (row.expires_ms != null && row.expires_ms <= this.expiredThrough()) this.q.addCounter.run('expired', -1);
    return true;
  }

  /** The key limit: refuses a write that adds `added` active keys to an account already at the limit. */
  private assertRoomForKeys(account: string | null, added: number): void {
    if (account === null || added <= 0 || this.keyLimit === null) return;
    if (this.countActive(account, Date.now()) + added > this.keyLimit) throw new KeyLimitError(account, this.keyLimit);
  }

  private countActive(account: string, nowMs: number): number {
    return this.q.countNoExpiry.get(account)!.n + this.q.countUnexpired.get(account, nowMs)!.n;
  }

  private expiredThrough(): number {
    return this.q.counter.get('expired_through')?.value ?? 0;
  }

  async createKey(record: KeyRecord): Promise<void> {
    this.run(
      this.db.transaction(() => {
        if (this.q.exists.get(record.id, record.hash)!.n > 0) throw new ConflictError('a key with this id or hash exists');
        this.assertRoomForKeys(record.account, isActive(record) ? 1 : 0);
        this.store(record);
      }).immediate,
    );
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

  async listKeys(query: KeyQuery = {}): Promise<Page<KeyRecord>> {
    const scan = keyScan(query);
    return this.run(() => this.keyPage(scan));
  }

  private keyPage(scan: KeyScan): Page<KeyRecord> {
    const source: KeySource = scan.account !== null ? 'account' : scan.state === null ? 'all' : scan.state === 'revoked' ? 'revoked' : 'live';
    const budget = Math.max(SCAN_BUDGET, scan.limit + 1);
    const matches = (r: KeyRow): boolean =>
      (scan.state === null || rowState(r, scan.nowMs) === scan.state) &&
      r.name.startsWith(scan.namePrefix) &&
      (scan.addressPrefix === '' || (r.account !== null && r.account.startsWith(scan.addressPrefix)));
    const items: KeyRow[] = [];
    let examined = 0;
    let last: KeyRow | null = null;
    let more = false;
    for (const row of this.rowsAfter(source, scan, budget)) {
      examined++;
      last = row;
      if (matches(row)) {
        if (items.length === scan.limit) {
          more = true;
          break;
        }
        items.push(row);
      }
      if (examined >= budget) break;
    }
    const at = more ? items.at(-1)! : examined >= budget ? last : null;
    return { items: items.map(toKey), nextCursor: at === null ? null : encodeKeyCursor({ ms: at.order_ms!, seq: at.seq! }) };
  }

  private *rowsAfter(source: KeySource, scan: KeyScan, budget: number): Generator<KeyRow> {
    const stmts = this.pages[source];
    const params = { ms: scan.after?.ms ?? MAX_ORDER_MS + 1, seq: scan.after?.seq ?? 0, account: scan.account, n: budget };
    if (scan.after !== null) yield* stmts.sameMs.iterate(params);
    yield* stmts.older.iterate(params);
  }

  async activeKeys(account: string, now = new Date()): Promise<KeyRecord[]> {
    const addr = normalizeAddress(account);
    const rows = this.run(() => [...this.q.activeNoExpiry.all(addr), ...this.q.activeUnexpired.all(addr, now.getTime())]);
    rows.sort((a, b) => b.order_ms! - a.order_ms! || b.seq! - a.seq!);
    return rows.slice(0, PAGE_MAX).map(toKey);
  }

  async countKeys(now = new Date()): Promise<KeyCounts> {
    const nowMs = now.getTime();
    const counters = this.run(
      this.db.transaction(() => {
        // Expired keys are counted as time passes them: only those since the last count are read.
        // (A clock that went back, or another process's, moves the mark back the same way.)
        const through = this.expiredThrough();
        if (nowMs > through) this.q.addCounter.run('expired', this.q.expiredBetween.get(through, nowMs)!.n);
        if (nowMs < through) this.q.addCounter.run('expired', -this.q.expiredBetween.get(nowMs, through)!.n);
        if (nowMs !== through) this.q.setCounter.run('expired_through', nowMs);
        return new Map(this.q.counters.all().map((c) => [c.name, c.value]));
      }).immediate,
    );
    const keys = counters.get('keys') ?? 0;
    const revoked = counters.get('revoked') ?? 0;
    const expired = counters.get('expired') ?? 0;
    return { active: keys - revoked - expired, revoked, expired };
  }

  async revokeKey(id: string, at: string): Promise<KeyRecord> {
    const { row, changed } = this.run(
      this.db.transaction(() => {
        const found = this.q.byId.get(id);
        if (!found) throw new NotFoundError(`key ${id}`);
        const changed = found.revoked_at === null && this.revokeRow(found, at);
        return { row: changed ? { ...found, revoked_at: at } : found, changed };
      }).immediate,
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
        const old = toKey(row);
        // Rotating an active key trades one for one; an expired one comes back to life, so it counts.
        const freed = isActive(old) && old.account === replacement.account ? 1 : 0;
        this.assertRoomForKeys(replacement.account, (isActive(replacement) ? 1 : 0) - freed);
        this.revokeRow(row, at);
        this.store(replacement);
        return old;
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
        const freed = live.filter((row) => isActive(toKey(row))).length;
        this.assertRoomForKeys(account, (isActive(replacement) ? 1 : 0) - freed);
        for (const row of live) this.revokeRow(row, at);
        const key: KeyRecord = { ...replacement, rotatedFrom: live[0]?.id ?? null };
        this.store(key);
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
    // Short transactions with a turn of the event loop between them: a busy second of logins
    // must not hold up the next one while its uses are written.
    const entries = [...batch];
    for (let i = 0; i < entries.length; i += TOUCH_CHUNK) {
      if (i > 0) await new Promise((r) => setImmediate(r));
      this.run(
        this.db.transaction(() => {
          for (const [id, use] of entries.slice(i, i + TOUCH_CHUNK)) this.q.touch.run({ id, at: use.at, ip: use.ip, protocol: use.protocol });
        }),
      );
    }
  }

  async importKey(record: KeyRecord): Promise<'imported' | 'exists'> {
    return this.run(
      this.db.transaction(() => {
        if (this.q.exists.get(record.id, record.hash)!.n > 0) return 'exists' as const;
        this.assertRoomForKeys(record.account, isActive(record) ? 1 : 0);
        if (record.account !== null) this.ensureAccountSync(record.account, record.createdAt);
        this.store(record);
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

  async listAccounts(query: AccountQuery = {}): Promise<Page<AccountRecord>> {
    const scan = accountScan(query);
    const rows = this.run(() => {
      const stmt = scan.withUpstream ? this.q.accountsWithUpstreamPage : this.q.accountsPage;
      const out: AccountRow[] = [];
      for (const row of stmt.iterate({ after: scan.after ?? '', prefix: scan.addressPrefix, n: scan.limit + 1 })) {
        // Addresses come in order: the first without the prefix ends the range.
        if (!row.address.startsWith(scan.addressPrefix)) break;
        out.push(row);
      }
      return out;
    });
    const more = rows.length > scan.limit;
    const items = rows.slice(0, scan.limit).map(toAccount);
    return { items, nextCursor: more ? encodeAccountCursor(items.at(-1)!.address) : null };
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
        const live = this.q.liveByAccount.all(addr);
        for (const row of live) this.revokeRow(row, at);
        this.q.deleteAccount.run(addr);
        return live.map((r) => r.id);
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

/** A row's state at `nowMs`, as isActive judges it. */
function rowState(r: KeyRow, nowMs: number): 'active' | 'revoked' | 'expired' {
  if (r.revoked_at !== null) return 'revoked';
  return r.expires_ms != null && !(r.expires_ms > nowMs) ? 'expired' : 'active';
}

function normalizeAccount(a: AccountRecord): AccountRecord {
  return { ...a, address: normalizeAddress(a.address), aliases: uniqueAddresses(a.aliases) };
}

export function openSqliteStore(path: string, options?: SqliteStoreOptions): KeyStore {
  return new SqliteStore(path, options);
}
