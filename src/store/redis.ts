import { randomUUID } from 'node:crypto';
import { decode } from '@msgpack/msgpack';
import { normalizeAddress, uniqueAddresses, type AccountRecord, type KeyRecord, type KeyUse } from '../keys/record.js';
import { ConflictError, InvalidCursorError, KeyLimitError, NotFoundError, StoreUnavailableError } from './errors.js';
import { accountScan, encodeAccountCursor, encodeKeyCursor, keyScan, PAGE_MAX, SCAN_BUDGET } from './paging.js';
import { compactDate, compactHash, compactId, compactText, expandId, keySpec, pairs, parseRecord, positionOf, SORT_KEY_LENGTH, sortKey } from './redis-codec.js';
import { createRedisClient, describeRedisTarget, parseRedisUrl, type RedisClient } from './redis-connect.js';
import { migrateToSchema2 } from './redis-migrate.js';
import { LUA_SCRIPTS, type ScriptName } from './redis-scripts.js';
import { TouchBuffer } from './touch-buffer.js';
import type { ActivityStore } from './activity.js';
import { RedisActivity } from './redis-activity.js';
import type { AccountPatch, AccountQuery, KeyCounts, KeyQuery, KeyStore, Page, StoreEvent, StoreLimits } from './types.js';

export interface RedisStoreOptions extends StoreLimits {
  /** Prefix of every Redis key, used as the one hash tag `{ns}` (default `kg`). */
  namespace?: string;
  touchIntervalMs?: number;
  /** Called when a background last-use write or an event listener fails. */
  onError?: (err: unknown) => void;
  /** How long openRedisStore waits for Redis before giving up (default 3000 ms). */
  connectTimeoutMs?: number;
  /** Progress of a migration of older data (see redis-migrate.ts). */
  onMigration?: (message: string, details: Record<string, unknown>) => void;
}

/* The layout and the scripts are in redis-scripts.ts; the compact record in redis-codec.ts. */

const ACCOUNT_FIELDS = ['address', 'aliases', 'displayName', 'disabled', 'createdAt', 'upstream'] as const satisfies readonly (keyof AccountRecord)[];
// Compile-time guard: a new account property must be added to the list above.
const _allAccountFields: [Exclude<keyof AccountRecord, (typeof ACCOUNT_FIELDS)[number]>] extends [never] ? true : false = true;
void _allAccountFields;

function accountFieldArgs(a: AccountRecord): string[] {
  return ACCOUNT_FIELDS.flatMap((f) => [f, JSON.stringify(f === 'aliases' ? [...a.aliases].sort() : (a[f] ?? null))]);
}

function parseAccount(h: Record<string, string>): AccountRecord | null {
  if (h.address === undefined) return null;
  const get = (f: string): unknown => (h[f] === undefined ? null : JSON.parse(h[f]));
  return {
    address: get('address') as string,
    aliases: [...((get('aliases') as string[] | null) ?? [])].sort(),
    displayName: get('displayName') as string | null,
    disabled: get('disabled') === true,
    createdAt: get('createdAt') as string,
    upstream: get('upstream') as Record<string, unknown> | null,
  };
}

/** Script replies of the form {idc, HGETALL, idc, HGETALL, …} as records. */
function recordsOf(flat: unknown[], from = 0): KeyRecord[] {
  const out: KeyRecord[] = [];
  for (let i = from; i + 1 < flat.length; i += 2) {
    const k = parseRecord(String(flat[i]), pairs(flat[i + 1]));
    if (k) out.push(k);
  }
  return out;
}

// ---- errors ---------------------------------------------------------------

function describeFailure(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  if (/ECONNREFUSED/.test(msg)) return 'connection refused';
  if (/Command timed out/i.test(msg)) return 'command timed out';
  if (/Stream isn't writeable|Connection is closed|enableOfflineQueue|MaxRetriesPerRequest|isn't ready|ECONNRESET|EPIPE/i.test(msg)) {
    return 'connection is closed';
  }
  return msg.replace(/\s+/g, ' ').trim();
}

function unavailable(where: string, err: unknown): StoreUnavailableError {
  return new StoreUnavailableError(`Redis unavailable (${where}): ${describeFailure(err)}`, { cause: err });
}

const MAX_OPTIMISTIC_ATTEMPTS = 20;
const TOUCH_CHUNK = 500;

// ---- the store ------------------------------------------------------------

class RedisStore implements KeyStore {
  readonly kind = 'redis' as const;
  readonly activity: ActivityStore;
  private readonly listeners = new Set<(event: StoreEvent) => void>();
  private readonly touches: TouchBuffer;
  private readonly origin = randomUUID();
  private readonly originJson: string;
  private readonly channel: string;
  private readonly p: string;
  private readonly limit: string;
  private closed = false;
  /** Set once the first SUBSCRIBE is answered; every later 'ready' of the subscriber is a reconnect. */
  private subscribed = false;

  constructor(
    private readonly client: RedisClient,
    private readonly sub: RedisClient,
    private readonly where: string,
    ns: string,
    touchIntervalMs: number,
    keysPerAccount: number | null,
    private readonly onError: (err: unknown) => void,
  ) {
    this.p = `{${ns}}:`;
    this.channel = `{${ns}}:events`;
    this.originJson = JSON.stringify(this.origin);
    this.limit = keysPerAccount === null ? '' : String(keysPerAccount);
    this.touches = new TouchBuffer((batch) => this.writeTouches(batch), touchIntervalMs, onError);
    this.activity = new RedisActivity(client, this.p, (fn) => this.run(fn));
    sub.on('message', (channel: string, message: string) => this.onMessage(channel, message));
    sub.on('ready', () => this.onSubscriberReady());
  }

  /** Subscribes to the event channel (at start-up, and again after every reconnect). */
  async subscribeEvents(): Promise<void> {
    await this.sub.subscribe(this.channel);
    this.subscribed = true;
  }

  /**
   * After a reconnect ioredis re-subscribes on its own, but events published
   * while the subscriber was away are gone. Our own SUBSCRIBE is answered
   * only once the subscription is live again, so listeners told
   * `events-resumed` after it miss nothing published from then on.
   */
  private onSubscriberReady(): void {
    if (!this.subscribed || this.closed) return;
    this.subscribeEvents().then(
      () => {
        if (!this.closed) this.emit({ type: 'events-resumed' });
      },
      // The next reconnect tries again.
      (err: unknown) => this.onError(err),
    );
  }

  get prefix(): string {
    return this.p;
  }

  private readonly k = {
    key: (id: string) => `${this.p}k:${compactId(id)}`,
    counts: () => `${this.p}n`,
    account: (a: string) => `${this.p}account:${a}`,
    alias: (n: string) => `${this.p}alias:${n}`,
    accounts: () => `${this.p}accounts`,
    upstreamAccounts: () => `${this.p}upstream-accounts`,
    value: (name: string) => `${this.p}value:${name}`,
  };

  private async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new StoreUnavailableError(`Redis store is closed (${this.where})`);
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ConflictError || err instanceof NotFoundError || err instanceof StoreUnavailableError || err instanceof InvalidCursorError) throw err;
      throw unavailable(this.where, err);
    }
  }

  /** Runs a script: `keys` route it (KEYS[1] is in the store's one slot), `args` follow the common header. */
  script(name: ScriptName, keys: string[], args: string[], now = Date.now()): Promise<unknown> {
    return this.call(name, keys, args, now);
  }

  /** A script whose reply is one MessagePack string, decoded. */
  private async packedScript(name: ScriptName, keys: string[], args: string[], now: number): Promise<unknown> {
    return decode((await this.call(`${name}Buffer`, keys, args, now)) as Buffer);
  }

  private call(command: string, keys: string[], args: string[], now: number): Promise<unknown> {
    const fn = (this.client as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[command]!;
    return fn.call(this.client, keys.length, ...keys, this.p, String(now), this.channel, this.originJson, this.limit, ...args);
  }

  /** HGETALL of several keys in one round trip (all in one slot, so fine on Cluster). */
  private async hgetallMany(keys: string[]): Promise<Record<string, string>[]> {
    if (keys.length === 0) return [];
    const pipe = this.client.pipeline();
    for (const k of keys) pipe.hgetall(k);
    const res = (await pipe.exec()) ?? [];
    return res.map(([err, val]) => {
      if (err) throw err;
      return (val ?? {}) as Record<string, string>;
    });
  }

  private emit(event: StoreEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch (err) {
        this.onError(err);
      }
    }
  }

  private onMessage(channel: string, message: string): void {
    if (channel !== this.channel || this.closed) return;
    let raw: unknown;
    try {
      raw = JSON.parse(message);
    } catch {
      return;
    }
    if (typeof raw !== 'object' || raw === null) return;
    const o = raw as Record<string, unknown>;
    // Own events were delivered when the operation returned.
    if (o.origin === this.origin) return;
    if (o.type === 'key-revoked' && typeof o.key === 'string' && (o.account === null || typeof o.account === 'string')) {
      let id: string;
      try {
        id = expandId(o.key);
      } catch {
        return;
      }
      this.emit({ type: 'key-revoked', id, account: o.account });
    } else if (o.type === 'account-changed' && typeof o.address === 'string') {
      this.emit({ type: 'account-changed', address: o.address });
    }
  }

  async ping(): Promise<void> {
    await this.run(() => this.client.ping());
  }

  async createKey(record: KeyRecord): Promise<void> {
    await this.run(async () => {
      const res = await this.script('kgCreateKey', [this.k.key(record.id)], keySpec(record));
      if (res === 'CONFLICT') throw new ConflictError('a key with this id or hash exists');
      if (res === 'LIMIT') throw this.limitError(record.account!);
    });
  }

  private limitError(account: string): KeyLimitError {
    return new KeyLimitError(account, Number(this.limit));
  }

  async findByHash(hash: string): Promise<KeyRecord | null> {
    return this.run(async () => {
      const c = compactHash(hash);
      const res = (await this.script('kgFindByHash', [`${this.p}h:${c.slice(0, 3)}`], [c.slice(3)])) as unknown[] | null;
      return res ? parseRecord(String(res[0]), pairs(res[1])) : null;
    });
  }

  async getKey(id: string): Promise<KeyRecord | null> {
    return this.run(async () => parseRecord(compactId(id), await this.client.hgetall(this.k.key(id))));
  }

  async getKeys(ids: readonly string[]): Promise<(KeyRecord | null)[]> {
    return this.run(async () => (await this.hgetallMany(ids.map((id) => this.k.key(id)))).map((h, i) => parseRecord(compactId(ids[i]!), h)));
  }

  async listKeys(query: KeyQuery = {}): Promise<Page<KeyRecord>> {
    const scan = keyScan(query);
    return this.run(async () => {
      const args = [
        scan.account ?? '',
        scan.after === null ? '' : sortKey(scan.after),
        String(scan.limit),
        String(Math.max(SCAN_BUDGET, scan.limit + 1)),
        scan.state ?? '',
        scan.namePrefix,
        scan.addressPrefix,
      ];
      const res = (await this.packedScript('kgListKeys', [this.k.counts()], args, scan.nowMs)) as unknown[];
      const at = res[0];
      return { items: recordsOf(res, 1), nextCursor: typeof at === 'string' ? encodeKeyCursor(positionOf(at.slice(0, SORT_KEY_LENGTH))) : null };
    });
  }

  async activeKeys(account: string, now = new Date()): Promise<KeyRecord[]> {
    const addr = normalizeAddress(account);
    return this.run(async () => recordsOf((await this.script('kgActiveKeys', [this.k.counts()], [addr, String(PAGE_MAX)], now.getTime())) as unknown[]));
  }

  async countKeys(now = new Date()): Promise<KeyCounts> {
    const [keys, revoked, expired] = (await this.run(() => this.script('kgCountKeys', [this.k.counts()], [], now.getTime()))) as number[];
    return { active: keys! - revoked! - expired!, revoked: revoked!, expired: expired! };
  }

  async revokeKey(id: string, at: string): Promise<KeyRecord> {
    const { key, changed } = await this.run(async () => {
      const res = (await this.script('kgRevokeKey', [this.k.key(id)], [compactId(id), compactDate(at)])) as unknown[];
      if (res[0] === 'NOTFOUND') throw new NotFoundError(`key ${id}`);
      return { key: parseRecord(compactId(id), pairs(res[2]))!, changed: Number(res[1]) === 1 };
    });
    if (changed) this.emit({ type: 'key-revoked', id, account: key.account });
    return key;
  }

  async rotateKey(oldId: string, replacement: KeyRecord, at: string): Promise<KeyRecord> {
    if (replacement.rotatedFrom !== oldId) throw new ConflictError('replacement.rotatedFrom must name the rotated key');
    const account = await this.run(async () => {
      const res = (await this.script('kgRotateKey', [this.k.key(oldId)], [compactId(oldId), compactDate(at), ...keySpec(replacement)])) as unknown[];
      if (res[0] === 'NOTFOUND') throw new NotFoundError(`key ${oldId}`);
      if (res[0] === 'INACTIVE') throw new ConflictError(`key ${oldId} is not active`);
      if (res[0] === 'CONFLICT') throw new ConflictError('a key with this id or hash exists');
      if (res[0] === 'LIMIT') throw this.limitError(replacement.account!);
      return typeof res[1] === 'string' ? res[1] : null;
    });
    this.emit({ type: 'key-revoked', id: oldId, account });
    return replacement;
  }

  async replaceDeviceKey(replacement: KeyRecord, at: string): Promise<{ key: KeyRecord; revoked: KeyRecord[] }> {
    const { account, deviceId } = replacement;
    if (account === null || deviceId === null) throw new ConflictError('a device key needs an account and a deviceId');
    const fresh: KeyRecord = { ...replacement, rotatedFrom: null };
    const revoked = await this.run(async () => {
      const res = (await this.script('kgReplaceDeviceKey', [this.k.key(replacement.id)], [compactDate(at), compactText(deviceId), ...keySpec(fresh)])) as unknown[];
      if (res[0] === 'CONFLICT') throw new ConflictError('a key with this id or hash exists');
      if (res[0] === 'LIMIT') throw this.limitError(account);
      return recordsOf(((res[1] ?? []) as unknown[][]).flat());
    });
    for (const k of revoked) this.emit({ type: 'key-revoked', id: k.id, account: k.account });
    return { key: { ...fresh, rotatedFrom: revoked[0]?.id ?? null }, revoked };
  }

  touchKey(id: string, use: KeyUse): void {
    this.touches.add(id, use);
  }

  flushTouches(): Promise<void> {
    return this.touches.flush();
  }

  private async writeTouches(batch: Map<string, KeyUse>): Promise<void> {
    await this.run(async () => {
      const entries = [...batch];
      for (let i = 0; i < entries.length; i += TOUCH_CHUNK) {
        const chunk = entries.slice(i, i + TOUCH_CHUNK);
        const keys = chunk.map(([id]) => this.k.key(id));
        const args = chunk.flatMap(([, u]) => [compactDate(u.at), u.ip === null ? '' : compactText(u.ip), u.protocol ?? '']);
        await this.script('kgTouch', keys, args);
      }
    });
  }

  async importKey(record: KeyRecord): Promise<'imported' | 'exists'> {
    return this.run(async () => {
      const accountArgs = record.account === null ? [] : accountFieldArgs(bareAccount(record.account, record.createdAt));
      const res = await this.script('kgImportKey', [this.k.key(record.id)], [String(accountArgs.length), ...accountArgs, ...keySpec(record)]);
      if (res === 'EXISTS') return 'exists';
      if (res === 'CONFLICT') throw new ConflictError(`address ${record.account} is taken`);
      if (res === 'LIMIT') throw this.limitError(record.account!);
      return 'imported';
    });
  }

  async createAccount(account: AccountRecord): Promise<AccountRecord> {
    const a: AccountRecord = { ...account, address: normalizeAddress(account.address), aliases: uniqueAddresses(account.aliases).sort() };
    for (const alias of a.aliases) if (alias === a.address) throw new ConflictError(`alias ${alias} is taken`);
    return this.run(async () => {
      const res = (await this.script('kgCreateAccount', [this.k.account(a.address)], [a.address, String(a.aliases.length), ...a.aliases, ...accountFieldArgs(a)])) as unknown[];
      if (res[0] === 'CONFLICT') {
        const i = Number(res[1]);
        throw new ConflictError(i === 0 ? `address ${a.address} is taken` : `alias ${a.aliases[i - 1]} is taken`);
      }
      return parseAccount(pairs(res[1]))!;
    });
  }

  async ensureAccount(address: string, now = new Date().toISOString()): Promise<AccountRecord> {
    const addr = normalizeAddress(address);
    return this.run(async () => {
      const res = (await this.script('kgEnsureAccount', [this.k.account(addr)], [addr, ...accountFieldArgs(bareAccount(addr, now))])) as unknown[];
      if (res[0] === 'CONFLICT') throw new ConflictError(`address ${addr} is taken`);
      return parseAccount(pairs(res[1]))!;
    });
  }

  async getAccount(address: string): Promise<AccountRecord | null> {
    return this.run(async () => parseAccount(await this.client.hgetall(this.k.account(normalizeAddress(address)))));
  }

  async getAccounts(addresses: readonly string[]): Promise<(AccountRecord | null)[]> {
    return this.run(async () => (await this.hgetallMany(addresses.map((a) => this.k.account(normalizeAddress(a))))).map(parseAccount));
  }

  async resolveAccount(name: string): Promise<AccountRecord | null> {
    const n = normalizeAddress(name);
    return this.run(async () => {
      const res = (await this.client.pipeline().hgetall(this.k.account(n)).get(this.k.alias(n)).exec()) ?? [];
      for (const [err] of res) if (err) throw err;
      const direct = parseAccount((res[0]?.[1] ?? {}) as Record<string, string>);
      if (direct) return direct;
      const owner = res[1]?.[1] as string | null | undefined;
      if (!owner) return null;
      return parseAccount(await this.client.hgetall(this.k.account(owner)));
    });
  }

  async listAccounts(query: AccountQuery = {}): Promise<Page<AccountRecord>> {
    const scan = accountScan(query);
    return this.run(async () => {
      const index = scan.withUpstream ? this.k.upstreamAccounts() : this.k.accounts();
      // Addresses sort lexically, so a prefix is a range; 0xff follows every UTF-8 byte.
      const from = scan.after !== null && scan.after >= scan.addressPrefix ? `(${scan.after}` : `[${scan.addressPrefix}`;
      const to = scan.addressPrefix === '' ? '+' : Buffer.concat([Buffer.from(`[${scan.addressPrefix}`), Buffer.from([0xff])]);
      const addresses = await this.client.zrangebylexBuffer(index, from, to, 'LIMIT', 0, scan.limit + 1);
      const names = addresses.map((b) => b.toString('utf8'));
      const pipe = this.client.pipeline();
      for (const a of names.slice(0, scan.limit)) pipe.hgetall(this.k.account(a));
      const res = (await pipe.exec()) ?? [];
      const items = res.map(([err, h]) => {
        if (err) throw err;
        return parseAccount((h ?? {}) as Record<string, string>);
      });
      const page = items.filter((a): a is AccountRecord => a !== null);
      return { items: page, nextCursor: names.length > scan.limit ? encodeAccountCursor(names[scan.limit - 1]!) : null };
    });
  }

  async updateAccount(address: string, patch: AccountPatch): Promise<AccountRecord> {
    const addr = normalizeAddress(address);
    const fieldArgs: string[] = [];
    if (patch.displayName !== undefined) fieldArgs.push('displayName', JSON.stringify(patch.displayName));
    if (patch.disabled !== undefined) fieldArgs.push('disabled', JSON.stringify(patch.disabled));
    if (patch.upstream !== undefined) fieldArgs.push('upstream', JSON.stringify(patch.upstream));
    const newAliases = patch.aliases !== undefined ? uniqueAddresses(patch.aliases).sort() : undefined;
    if (newAliases) for (const alias of newAliases) if (alias === addr) throw new ConflictError(`alias ${alias} is taken`);

    const updated = await this.run(async () => {
      for (let attempt = 0; attempt < MAX_OPTIMISTIC_ATTEMPTS; attempt++) {
        let expected = '';
        let oldAliases: string[] = [];
        if (newAliases) {
          const cur = await this.client.hget(this.k.account(addr), 'aliases');
          if (cur === null) throw new NotFoundError(`account ${addr}`);
          expected = cur;
          oldAliases = JSON.parse(cur) as string[];
        }
        const fresh = newAliases ?? [];
        const args = [addr, expected, JSON.stringify(fresh), String(oldAliases.length), String(fresh.length), ...oldAliases, ...fresh, ...fieldArgs];
        const res = (await this.script('kgUpdateAccount', [this.k.account(addr)], args)) as unknown[];
        if (res[0] === 'RETRY') continue;
        if (res[0] === 'NOTFOUND') throw new NotFoundError(`account ${addr}`);
        if (res[0] === 'CONFLICT') throw new ConflictError(`alias ${fresh[Number(res[1]) - 1]} is taken`);
        return parseAccount(pairs(res[1]))!;
      }
      throw new StoreUnavailableError(`Redis store (${this.where}): account ${addr} changed concurrently too often; try again`);
    });
    this.emit({ type: 'account-changed', address: addr });
    return updated;
  }

  async deleteAccount(address: string, at: string): Promise<void> {
    const addr = normalizeAddress(address);
    const revoked = await this.run(async () => {
      for (let attempt = 0; attempt < MAX_OPTIMISTIC_ATTEMPTS; attempt++) {
        const aliasesJson = await this.client.hget(this.k.account(addr), 'aliases');
        if (aliasesJson === null) throw new NotFoundError(`account ${addr}`);
        const aliases = JSON.parse(aliasesJson) as string[];
        const res = (await this.script('kgDeleteAccount', [this.k.account(addr)], [addr, compactDate(at), aliasesJson, ...aliases])) as unknown[];
        if (res[0] === 'RETRY') continue;
        if (res[0] === 'NOTFOUND') throw new NotFoundError(`account ${addr}`);
        return ((res[1] ?? []) as string[]).map(expandId);
      }
      throw new StoreUnavailableError(`Redis store (${this.where}): account ${addr} changed concurrently too often; try again`);
    });
    for (const id of revoked) this.emit({ type: 'key-revoked', id, account: addr });
    this.emit({ type: 'account-changed', address: addr });
  }

  async putValue(name: string, value: string, ttlMs: number | null, options: { onlyIfAbsent?: boolean } = {}): Promise<boolean> {
    return this.run(async () => {
      const k = this.k.value(name);
      const px = ttlMs === null ? null : Math.max(1, Math.ceil(ttlMs));
      let res: string | null;
      if (px === null) res = options.onlyIfAbsent ? await this.client.set(k, value, 'NX') : await this.client.set(k, value);
      else res = options.onlyIfAbsent ? await this.client.set(k, value, 'PX', px, 'NX') : await this.client.set(k, value, 'PX', px);
      return res === 'OK';
    });
  }

  async getValue(name: string): Promise<string | null> {
    return this.run(() => this.client.get(this.k.value(name)));
  }

  async takeValue(name: string): Promise<string | null> {
    return this.run(() => this.client.getdel(this.k.value(name)));
  }

  async deleteValue(name: string, ifValue?: string): Promise<boolean> {
    return this.run(async () => {
      const n = ifValue === undefined ? await this.client.del(this.k.value(name)) : await this.script('kgDeleteValueIf', [this.k.value(name)], [ifValue]);
      return Number(n) > 0;
    });
  }

  async addToCounter(name: string, amount: number, ttlMs: number | null): Promise<number> {
    const px = ttlMs === null ? '' : String(Math.max(1, Math.ceil(ttlMs)));
    return this.run(async () => Number(await this.script('kgAddToCounter', [this.k.value(name)], [String(Math.trunc(amount)), px])));
  }

  subscribe(listener: (event: StoreEvent) => void): () => void {
    // Wrap so the same function subscribed twice gets two deliveries, like an EventEmitter.
    const entry = (e: StoreEvent): void => listener(e);
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.touches.stop();
    try {
      await this.touches.flush();
    } catch (err) {
      this.onError(err);
    }
    this.closed = true;
    this.listeners.clear();
    await Promise.all([quitQuietly(this.client), quitQuietly(this.sub)]);
  }
}

function bareAccount(address: string, createdAt: string): AccountRecord {
  return { address, aliases: [], displayName: null, disabled: false, createdAt, upstream: null };
}

async function quitQuietly(c: RedisClient): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, 1000);
  });
  // QUIT waits for pending replies; a dead server must not stall close().
  await Promise.race([c.quit().catch(() => {}), limit]);
  clearTimeout(timer);
  c.disconnect();
}

const NAMESPACE_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

/**
 * Connects to Redis (plain, TLS, Sentinel or Cluster; see parseRedisUrl) and
 * returns a KeyStore. Rejects with StoreUnavailableError naming the host (never
 * the password) when Redis does not answer within `connectTimeoutMs`.
 */
export async function openRedisStore(url: string, options: RedisStoreOptions = {}): Promise<KeyStore> {
  const target = parseRedisUrl(url);
  const where = describeRedisTarget(target);
  const ns = options.namespace ?? 'kg';
  if (!NAMESPACE_RE.test(ns)) throw new Error(`invalid Redis namespace "${ns}": use 1-64 of A-Z a-z 0-9 _ . : -`);
  const timeoutMs = options.connectTimeoutMs ?? 3000;
  const onError = options.onError ?? (() => {});

  const client = createRedisClient(url, { connectTimeoutMs: timeoutMs, connectionName: 'keygate' });
  const sub = createRedisClient(url, { connectTimeoutMs: timeoutMs, connectionName: 'keygate-events' });
  // Errors also surface as failed commands; the listener keeps ioredis from logging each reconnect attempt.
  let lastError: unknown;
  let refuse: ((err: StoreUnavailableError) => void) | undefined;
  const refused = new Promise<never>((_, reject) => (refuse = reject));
  for (const c of [client, sub]) {
    c.on('error', (err: unknown) => {
      lastError = err;
      // Retrying cannot fix credentials: say so now instead of at the deadline.
      if (/WRONGPASS|NOAUTH|NOPERM|invalid password/i.test(String((err as Error)?.message))) {
        refuse?.(new StoreUnavailableError(`Redis unavailable (${where}): authentication failed: ${describeFailure(err)}`, { cause: err }));
      }
    });
  }
  for (const [name, lua] of Object.entries(LUA_SCRIPTS)) {
    client.defineCommand(name, { lua });
  }

  let timer: NodeJS.Timeout | undefined;
  try {
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const detail = lastError ? `${describeFailure(lastError)} (no answer within ${timeoutMs} ms)` : `no answer within ${timeoutMs} ms`;
        reject(new StoreUnavailableError(`Redis unavailable (${where}): ${detail}`, { cause: lastError }));
      }, timeoutMs);
    });
    const store = new RedisStore(client, sub, where, ns, options.touchIntervalMs ?? 1000, options.keysPerAccount ?? null, onError);
    await Promise.race([
      deadline,
      refused,
      (async () => {
        await Promise.all([whenReady(client), whenReady(sub)]);
        await client.ping();
        await store.subscribeEvents();
      })(),
    ]);
    clearTimeout(timer);
    // After the connection deadline: a migration takes as long as the data it moves.
    await migrateToSchema2({
      client,
      prefix: store.prefix,
      script: (name, keys, args) => store.script(name, keys, args),
      log: options.onMigration ?? (() => {}),
    });
    return store;
  } catch (err) {
    client.disconnect();
    sub.disconnect();
    throw err instanceof StoreUnavailableError ? err : unavailable(where, err);
  } finally {
    clearTimeout(timer);
  }
}

function whenReady(c: RedisClient): Promise<void> {
  if (c.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => c.once('ready', () => resolve()));
}
