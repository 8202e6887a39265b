import { randomUUID } from 'node:crypto';
import { normalizeAddress, uniqueAddresses, type AccountRecord, type KeyRecord, type KeyUse } from '../keys/record.js';
import { ConflictError, NotFoundError, StoreUnavailableError } from './errors.js';
import { createRedisClient, describeRedisTarget, parseRedisUrl, type RedisClient } from './redis-connect.js';
import { TouchBuffer } from './touch-buffer.js';
import type { ActivityStore } from './activity.js';
import { RedisActivity } from './redis-activity.js';
import type { AccountPatch, KeyStore, StoreEvent } from './types.js';

export interface RedisStoreOptions {
  /** Prefix of every Redis key, used as the one hash tag `{ns}` (default `kg`). */
  namespace?: string;
  touchIntervalMs?: number;
  /** Called when a background last-use write or an event listener fails. */
  onError?: (err: unknown) => void;
  /** How long openRedisStore waits for Redis before giving up (default 3000 ms). */
  connectTimeoutMs?: number;
}

/*
 * Layout. Every key carries the hash tag {ns}, so all of them live in one
 * Cluster slot and every script may touch any of them (declared in KEYS, except
 * the records kgFindByHash and kgReplaceDeviceKey reach through an index, in
 * the same slot).
 *   {ns}:key:<id>            hash, one field per KeyRecord property, each JSON-encoded
 *   {ns}:hash:<sha256>       string → id
 *   {ns}:keys                zset, score createdAt (ms), member "<seq16>:<id>" (seq breaks ties by insertion)
 *   {ns}:acct-keys:<address> zset, same members, keys bound to the address
 *   {ns}:seq                 counter for the members above
 *   {ns}:account:<address>   hash, one field per AccountRecord property, JSON-encoded
 *   {ns}:alias:<name>        string → address
 *   {ns}:accounts            zset, score 0, member address (lexical order)
 *   {ns}:value:<name>        string, a value with a lifetime (putValue), expiry by PX
 * Events: PUBLISH on channel {ns}:events, JSON StoreEvent plus "origin" (the instance id).
 * Field values are JSON text, so Lua builds event JSON by concatenating stored fields.
 */

const KEY_FIELDS = [
  'id',
  'hash',
  'name',
  'account',
  'scopes',
  'createdAt',
  'expiresAt',
  'allowedIps',
  'revokedAt',
  'lastUsedAt',
  'lastUsedIp',
  'lastUsedProtocol',
  'platform',
  'deviceId',
  'rotatedFrom',
  'canary',
  'limits',
] as const satisfies readonly (keyof KeyRecord)[];
const ACCOUNT_FIELDS = ['address', 'aliases', 'displayName', 'disabled', 'createdAt', 'upstream'] as const satisfies readonly (keyof AccountRecord)[];
// Compile-time guard: a new record property must be added to the lists above.
const _allKeyFields: [Exclude<keyof KeyRecord, (typeof KEY_FIELDS)[number]>] extends [never] ? true : false = true;
const _allAccountFields: [Exclude<keyof AccountRecord, (typeof ACCOUNT_FIELDS)[number]>] extends [never] ? true : false = true;
void _allKeyFields;
void _allAccountFields;

const REQUIRED_KEY_FIELDS = new Set<string>(['id', 'hash', 'name', 'scopes', 'createdAt']);

function keyFieldArgs(r: KeyRecord): string[] {
  return KEY_FIELDS.flatMap((f) => [f, JSON.stringify(r[f] ?? null)]);
}

function parseKey(h: Record<string, string>): KeyRecord | null {
  if (h.id === undefined) return null;
  const out: Record<string, unknown> = {};
  for (const f of KEY_FIELDS) {
    const raw = h[f];
    if (raw === undefined && REQUIRED_KEY_FIELDS.has(f)) throw new Error(`key record lacks field ${f}`);
    out[f] = raw === undefined ? null : JSON.parse(raw);
  }
  // Records written before the field existed have none: not a canary.
  out.canary = out.canary === true;
  return out as unknown as KeyRecord;
}

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

function pairs(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(flat)) return out;
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

function scoreOf(iso: string): string {
  const ms = Date.parse(iso);
  return Number.isFinite(ms) ? String(ms) : '0';
}

const MEMBER_PREFIX = 17; // "%016d:"

// ---- Lua ----------------------------------------------------------------

const LUA_LIB = `
local function is_null(v) return v == false or v == nil or v == 'null' end
local function argv_from(first, last)
  local out = {}
  for i = first, last do out[#out + 1] = ARGV[i] end
  return out
end
local function insert_key(kKey, kHash, kAll, kSeq, kAcct, id, score, first)
  redis.call('HSET', kKey, unpack(argv_from(first, #ARGV)))
  redis.call('SET', kHash, id)
  local member = string.format('%016d', redis.call('INCR', kSeq)) .. ':' .. id
  redis.call('ZADD', kAll, score, member)
  if kAcct then redis.call('ZADD', kAcct, score, member) end
end
local function publish_revoked(k, channel, origin)
  local id = redis.call('HGET', k, 'id')
  local acct = redis.call('HGET', k, 'account') or 'null'
  redis.call('PUBLISH', channel, '{"type":"key-revoked","id":' .. id .. ',"account":' .. acct .. ',"origin":' .. origin .. '}')
end
local function publish_account(channel, addrJson, origin)
  redis.call('PUBLISH', channel, '{"type":"account-changed","address":' .. addrJson .. ',"origin":' .. origin .. '}')
end
`;

const SCRIPTS = {
  // KEYS: hash  ARGV: key-name prefix. The login path's lookup in one round trip.
  // The record's name is known only inside the script, so it is not in KEYS;
  // it carries the same {ns} hash tag, hence the same Cluster slot.
  kgFindByHash: `
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('HGETALL', ARGV[1] .. id)`,

  // KEYS: key, hash, all, seq[, acctKeys]  ARGV: id, score, fields...
  kgCreateKey: `
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 'CONFLICT' end
insert_key(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], 3)
return 'OK'`,

  // KEYS: key  ARGV: atJson, channel, originJson
  kgRevokeKey: `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOTFOUND'} end
local changed = 0
if is_null(redis.call('HGET', KEYS[1], 'revokedAt')) then
  redis.call('HSET', KEYS[1], 'revokedAt', ARGV[1])
  publish_revoked(KEYS[1], ARGV[2], ARGV[3])
  changed = 1
end
return {'OK', changed, redis.call('HGETALL', KEYS[1])}`,

  // KEYS: old, newKey, newHash, all, seq[, acctKeys]  ARGV: atJson, channel, originJson, newId, score, fields...
  kgRotateKey: `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOTFOUND'} end
if not is_null(redis.call('HGET', KEYS[1], 'revokedAt')) then return {'INACTIVE'} end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return {'CONFLICT'} end
redis.call('HSET', KEYS[1], 'revokedAt', ARGV[1])
insert_key(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[4], ARGV[5], 6)
publish_revoked(KEYS[1], ARGV[2], ARGV[3])
return {'OK', redis.call('HGET', KEYS[1], 'account') or 'null'}`,

  // KEYS: acctKeys, newKey, newHash, all, seq  ARGV: atJson, channel, originJson, deviceIdJson, key-name prefix, newId, score, fields...
  // The account's records are found through acctKeys, so they are not in KEYS (same {ns} tag, same slot).
  // Field values are JSON text, so deviceId compares as JSON and the newest revoked 'id' is already the JSON for rotatedFrom.
  // Returns {'OK', {HGETALL of each revoked key, newest first}}.
  kgReplaceDeviceKey: `
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return {'CONFLICT'} end
local revoked = {}
local from = 'null'
for _, member in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
  local k = ARGV[5] .. string.sub(member, ${MEMBER_PREFIX + 1})
  local f = redis.call('HMGET', k, 'deviceId', 'revokedAt')
  if f[1] == ARGV[4] and is_null(f[2]) then
    redis.call('HSET', k, 'revokedAt', ARGV[1])
    publish_revoked(k, ARGV[2], ARGV[3])
    if #revoked == 0 then from = redis.call('HGET', k, 'id') end
    revoked[#revoked + 1] = redis.call('HGETALL', k)
  end
end
insert_key(KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[1], ARGV[6], ARGV[7], 8)
redis.call('HSET', KEYS[2], 'rotatedFrom', from)
return {'OK', revoked}`,

  // KEYS: counter  ARGV: amount, ttl ms ('' = none). A fixed window: the lifetime is set only when the counter starts.
  kgAddToCounter: `
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n`,

  // KEYS: value  ARGV: expected. Deletes only while the value is still the one the caller holds.
  kgDeleteValueIf: `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`,

  // KEYS: key per id  ARGV: at, ip, protocol per key. Only keys that exist are updated.
  kgTouch: `
local n = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local b = (i - 1) * 3
    redis.call('HSET', KEYS[i], 'lastUsedAt', ARGV[b + 1], 'lastUsedIp', ARGV[b + 2], 'lastUsedProtocol', ARGV[b + 3])
    n = n + 1
  end
end
return n`,

  // KEYS: key, hash, all, seq[, acctKeys, accounts, account, alias]
  // ARGV: id, score, address, nAccountArgs, accountFields..., keyFields...
  kgImportKey: `
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 'EXISTS' end
local n = tonumber(ARGV[4])
if KEYS[5] and redis.call('EXISTS', KEYS[7]) == 0 then
  if redis.call('EXISTS', KEYS[8]) == 1 then return 'CONFLICT' end
  redis.call('HSET', KEYS[7], unpack(argv_from(5, 4 + n)))
  redis.call('ZADD', KEYS[6], 0, ARGV[3])
end
insert_key(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], 5 + n)
return 'OK'`,

  // KEYS: account, alias(address), accounts, then alias:<a>, account:<a> per alias
  // ARGV: address, fields...   Returns {'CONFLICT', i}: 0 = the address, i = i-th alias.
  kgCreateAccount: `
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return {'CONFLICT', 0} end
for i = 4, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 or redis.call('EXISTS', KEYS[i + 1]) == 1 then return {'CONFLICT', (i - 2) / 2} end
end
redis.call('HSET', KEYS[1], unpack(argv_from(2, #ARGV)))
redis.call('ZADD', KEYS[3], 0, ARGV[1])
for i = 4, #KEYS, 2 do redis.call('SET', KEYS[i], ARGV[1]) end
return {'OK', redis.call('HGETALL', KEYS[1])}`,

  // KEYS: account, alias(address), accounts  ARGV: address, fields...
  kgEnsureAccount: `
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'CONFLICT'} end
  redis.call('HSET', KEYS[1], unpack(argv_from(2, #ARGV)))
  redis.call('ZADD', KEYS[3], 0, ARGV[1])
end
return {'OK', redis.call('HGETALL', KEYS[1])}`,

  // KEYS: account, alias:<old>... (nOld), then alias:<new>, account:<new> per new alias
  // ARGV: address, channel, originJson, expectedAliasesJson ('' = aliases not patched), nOld, newAliasesJson, nFieldArgs, fields...
  kgUpdateAccount: `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOTFOUND'} end
local nOld = tonumber(ARGV[5])
if ARGV[4] ~= '' then
  if redis.call('HGET', KEYS[1], 'aliases') ~= ARGV[4] then return {'RETRY'} end
  for i = 2 + nOld, #KEYS, 2 do
    local owner = redis.call('GET', KEYS[i])
    if (owner and owner ~= ARGV[1]) or redis.call('EXISTS', KEYS[i + 1]) == 1 then return {'CONFLICT', (i - nOld) / 2} end
  end
  for i = 2, 1 + nOld do
    if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
  end
  for i = 2 + nOld, #KEYS, 2 do redis.call('SET', KEYS[i], ARGV[1]) end
  redis.call('HSET', KEYS[1], 'aliases', ARGV[6])
end
local n = tonumber(ARGV[7])
if n > 0 then redis.call('HSET', KEYS[1], unpack(argv_from(8, 7 + n))) end
publish_account(ARGV[2], redis.call('HGET', KEYS[1], 'address'), ARGV[3])
return {'OK', redis.call('HGETALL', KEYS[1])}`,

  // KEYS: account, acctKeys, accounts, alias:<a>... (nAlias), key:<id>... (every key in acctKeys)
  // ARGV: address, channel, originJson, atJson, expectedAliasesJson, nAlias, expectedKeyCount
  kgDeleteAccount: `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOTFOUND'} end
if redis.call('HGET', KEYS[1], 'aliases') ~= ARGV[5] or redis.call('ZCARD', KEYS[2]) ~= tonumber(ARGV[7]) then return {'RETRY'} end
local nAlias = tonumber(ARGV[6])
local revoked = {}
for i = 4 + nAlias, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 and is_null(redis.call('HGET', KEYS[i], 'revokedAt')) then
    redis.call('HSET', KEYS[i], 'revokedAt', ARGV[4])
    publish_revoked(KEYS[i], ARGV[2], ARGV[3])
    revoked[#revoked + 1] = redis.call('HGET', KEYS[i], 'id')
  end
end
for i = 4, 3 + nAlias do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
local addr = redis.call('HGET', KEYS[1], 'address')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
publish_account(ARGV[2], addr, ARGV[3])
return {'OK', revoked}`,
} as const;

type ScriptName = keyof typeof SCRIPTS;

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
  private closed = false;
  /** Set once the first SUBSCRIBE is answered; every later 'ready' of the subscriber is a reconnect. */
  private subscribed = false;

  constructor(
    private readonly client: RedisClient,
    private readonly sub: RedisClient,
    private readonly where: string,
    ns: string,
    touchIntervalMs: number,
    private readonly onError: (err: unknown) => void,
  ) {
    this.p = `{${ns}}:`;
    this.channel = `{${ns}}:events`;
    this.originJson = JSON.stringify(this.origin);
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

  private readonly k = {
    key: (id: string) => `${this.p}key:${id}`,
    hash: (h: string) => `${this.p}hash:${h}`,
    all: () => `${this.p}keys`,
    seq: () => `${this.p}seq`,
    acctKeys: (a: string) => `${this.p}acct-keys:${a}`,
    account: (a: string) => `${this.p}account:${a}`,
    alias: (n: string) => `${this.p}alias:${n}`,
    accounts: () => `${this.p}accounts`,
    value: (name: string) => `${this.p}value:${name}`,
  };

  private async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new StoreUnavailableError(`Redis store is closed (${this.where})`);
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ConflictError || err instanceof NotFoundError || err instanceof StoreUnavailableError) throw err;
      throw unavailable(this.where, err);
    }
  }

  private script(name: ScriptName, keys: string[], args: string[]): Promise<unknown> {
    const fn = (this.client as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[name]!;
    return fn.call(this.client, keys.length, ...keys, ...args);
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
    if (o.type === 'key-revoked' && typeof o.id === 'string' && (o.account === null || typeof o.account === 'string')) {
      this.emit({ type: 'key-revoked', id: o.id, account: o.account });
    } else if (o.type === 'account-changed' && typeof o.address === 'string') {
      this.emit({ type: 'account-changed', address: o.address });
    }
  }

  async ping(): Promise<void> {
    await this.run(() => this.client.ping());
  }

  private insertKeys(r: KeyRecord): string[] {
    const keys = [this.k.key(r.id), this.k.hash(r.hash), this.k.all(), this.k.seq()];
    if (r.account !== null) keys.push(this.k.acctKeys(r.account));
    return keys;
  }

  async createKey(record: KeyRecord): Promise<void> {
    await this.run(async () => {
      const res = await this.script('kgCreateKey', this.insertKeys(record), [record.id, scoreOf(record.createdAt), ...keyFieldArgs(record)]);
      if (res === 'CONFLICT') throw new ConflictError('a key with this id or hash exists');
    });
  }

  async findByHash(hash: string): Promise<KeyRecord | null> {
    return this.run(async () => {
      const flat = (await this.script('kgFindByHash', [this.k.hash(hash)], [this.k.key('')])) as string[] | null;
      if (!flat) return null;
      const h: Record<string, string> = {};
      for (let i = 0; i < flat.length; i += 2) h[flat[i]!] = flat[i + 1]!;
      return parseKey(h);
    });
  }

  async getKey(id: string): Promise<KeyRecord | null> {
    return this.run(async () => parseKey(await this.client.hgetall(this.k.key(id))));
  }

  async getKeys(ids: readonly string[]): Promise<(KeyRecord | null)[]> {
    return this.run(async () => (await this.hgetallMany(ids.map((id) => this.k.key(id)))).map(parseKey));
  }

  async listKeys(filter: { account?: string } = {}): Promise<KeyRecord[]> {
    return this.run(async () => {
      const index = filter.account !== undefined ? this.k.acctKeys(normalizeAddress(filter.account)) : this.k.all();
      const members = await this.client.zrevrange(index, 0, '-1');
      const hashes = await this.hgetallMany(members.map((m) => this.k.key(m.slice(MEMBER_PREFIX))));
      return hashes.map(parseKey).filter((k): k is KeyRecord => k !== null);
    });
  }

  async revokeKey(id: string, at: string): Promise<KeyRecord> {
    const { key, changed } = await this.run(async () => {
      const res = (await this.script('kgRevokeKey', [this.k.key(id)], [JSON.stringify(at), this.channel, this.originJson])) as unknown[];
      if (res[0] === 'NOTFOUND') throw new NotFoundError(`key ${id}`);
      return { key: parseKey(pairs(res[2]))!, changed: Number(res[1]) === 1 };
    });
    if (changed) this.emit({ type: 'key-revoked', id, account: key.account });
    return key;
  }

  async rotateKey(oldId: string, replacement: KeyRecord, at: string): Promise<KeyRecord> {
    if (replacement.rotatedFrom !== oldId) throw new ConflictError('replacement.rotatedFrom must name the rotated key');
    const account = await this.run(async () => {
      const keys = [this.k.key(oldId), ...this.insertKeys(replacement)];
      const args = [JSON.stringify(at), this.channel, this.originJson, replacement.id, scoreOf(replacement.createdAt), ...keyFieldArgs(replacement)];
      const res = (await this.script('kgRotateKey', keys, args)) as unknown[];
      if (res[0] === 'NOTFOUND') throw new NotFoundError(`key ${oldId}`);
      if (res[0] === 'INACTIVE') throw new ConflictError(`key ${oldId} is not active`);
      if (res[0] === 'CONFLICT') throw new ConflictError('a key with this id or hash exists');
      return JSON.parse(String(res[1])) as string | null;
    });
    this.emit({ type: 'key-revoked', id: oldId, account });
    return parseKey(Object.fromEntries(pairsOf(keyFieldArgs(replacement))))!;
  }

  async replaceDeviceKey(replacement: KeyRecord, at: string): Promise<{ key: KeyRecord; revoked: KeyRecord[] }> {
    const { account, deviceId } = replacement;
    if (account === null || deviceId === null) throw new ConflictError('a device key needs an account and a deviceId');
    const revoked = await this.run(async () => {
      const [kKey, kHash, kAll, kSeq] = this.insertKeys(replacement);
      const keys = [this.k.acctKeys(account), kKey!, kHash!, kAll!, kSeq!];
      const args = [JSON.stringify(at), this.channel, this.originJson, JSON.stringify(deviceId), this.k.key(''), replacement.id, scoreOf(replacement.createdAt), ...keyFieldArgs(replacement)];
      const res = (await this.script('kgReplaceDeviceKey', keys, args)) as unknown[];
      if (res[0] === 'CONFLICT') throw new ConflictError('a key with this id or hash exists');
      return ((res[1] ?? []) as unknown[]).map((flat) => parseKey(pairs(flat))!);
    });
    for (const k of revoked) this.emit({ type: 'key-revoked', id: k.id, account: k.account });
    const key = parseKey(Object.fromEntries(pairsOf(keyFieldArgs({ ...replacement, rotatedFrom: revoked[0]?.id ?? null }))))!;
    return { key, revoked };
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
        const args = chunk.flatMap(([, u]) => [JSON.stringify(u.at), JSON.stringify(u.ip ?? null), JSON.stringify(u.protocol ?? null)]);
        await this.script('kgTouch', keys, args);
      }
    });
  }

  async importKey(record: KeyRecord): Promise<'imported' | 'exists'> {
    return this.run(async () => {
      const keys = this.insertKeys(record);
      let accountArgs: string[] = [];
      if (record.account !== null) {
        keys.push(this.k.accounts(), this.k.account(record.account), this.k.alias(record.account));
        accountArgs = accountFieldArgs(bareAccount(record.account, record.createdAt));
      }
      const args = [record.id, scoreOf(record.createdAt), record.account ?? '', String(accountArgs.length), ...accountArgs, ...keyFieldArgs(record)];
      const res = await this.script('kgImportKey', keys, args);
      if (res === 'EXISTS') return 'exists';
      if (res === 'CONFLICT') throw new ConflictError(`address ${record.account} is taken`);
      return 'imported';
    });
  }

  async createAccount(account: AccountRecord): Promise<AccountRecord> {
    const a: AccountRecord = { ...account, address: normalizeAddress(account.address), aliases: uniqueAddresses(account.aliases).sort() };
    for (const alias of a.aliases) if (alias === a.address) throw new ConflictError(`alias ${alias} is taken`);
    return this.run(async () => {
      const keys = [this.k.account(a.address), this.k.alias(a.address), this.k.accounts()];
      for (const alias of a.aliases) keys.push(this.k.alias(alias), this.k.account(alias));
      const res = (await this.script('kgCreateAccount', keys, [a.address, ...accountFieldArgs(a)])) as unknown[];
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
      const keys = [this.k.account(addr), this.k.alias(addr), this.k.accounts()];
      const res = (await this.script('kgEnsureAccount', keys, [addr, ...accountFieldArgs(bareAccount(addr, now))])) as unknown[];
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

  async listAccounts(): Promise<AccountRecord[]> {
    return this.run(async () => {
      const addresses = await this.client.zrange(this.k.accounts(), 0, '-1');
      const hashes = await this.hgetallMany(addresses.map((a) => this.k.account(a)));
      return hashes.map(parseAccount).filter((a): a is AccountRecord => a !== null);
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
        const keys = [this.k.account(addr)];
        let expected = '';
        let oldAliases: string[] = [];
        if (newAliases) {
          const cur = await this.client.hget(this.k.account(addr), 'aliases');
          if (cur === null) throw new NotFoundError(`account ${addr}`);
          expected = cur;
          oldAliases = JSON.parse(cur) as string[];
          for (const a of oldAliases) keys.push(this.k.alias(a));
          for (const a of newAliases) keys.push(this.k.alias(a), this.k.account(a));
        }
        const args = [addr, this.channel, this.originJson, expected, String(oldAliases.length), JSON.stringify(newAliases ?? []), String(fieldArgs.length), ...fieldArgs];
        const res = (await this.script('kgUpdateAccount', keys, args)) as unknown[];
        if (res[0] === 'RETRY') continue;
        if (res[0] === 'NOTFOUND') throw new NotFoundError(`account ${addr}`);
        if (res[0] === 'CONFLICT') throw new ConflictError(`alias ${newAliases![Number(res[1]) - 1]} is taken`);
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
        const res0 = (await this.client.pipeline().hget(this.k.account(addr), 'aliases').zrange(this.k.acctKeys(addr), 0, '-1').exec()) ?? [];
        for (const [err] of res0) if (err) throw err;
        const aliasesJson = res0[0]?.[1] as string | null;
        if (aliasesJson === null || aliasesJson === undefined) throw new NotFoundError(`account ${addr}`);
        const members = (res0[1]?.[1] ?? []) as string[];
        const aliases = JSON.parse(aliasesJson) as string[];
        const keys = [this.k.account(addr), this.k.acctKeys(addr), this.k.accounts(), ...aliases.map((a) => this.k.alias(a)), ...members.map((m) => this.k.key(m.slice(MEMBER_PREFIX)))];
        const args = [addr, this.channel, this.originJson, JSON.stringify(at), aliasesJson, String(aliases.length), String(members.length)];
        const res = (await this.script('kgDeleteAccount', keys, args)) as unknown[];
        if (res[0] === 'RETRY') continue;
        if (res[0] === 'NOTFOUND') throw new NotFoundError(`account ${addr}`);
        return ((res[1] ?? []) as string[]).map((idJson) => JSON.parse(idJson) as string);
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

function pairsOf(flat: string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
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
  for (const [name, lua] of Object.entries(SCRIPTS)) {
    client.defineCommand(name, { lua: LUA_LIB + lua });
  }

  let timer: NodeJS.Timeout | undefined;
  try {
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const detail = lastError ? `${describeFailure(lastError)} (no answer within ${timeoutMs} ms)` : `no answer within ${timeoutMs} ms`;
        reject(new StoreUnavailableError(`Redis unavailable (${where}): ${detail}`, { cause: lastError }));
      }, timeoutMs);
    });
    const store = new RedisStore(client, sub, where, ns, options.touchIntervalMs ?? 1000, onError);
    await Promise.race([
      deadline,
      refused,
      (async () => {
        await Promise.all([whenReady(client), whenReady(sub)]);
        await client.ping();
        await store.subscribeEvents();
      })(),
    ]);
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
