import type { AccountRecord, KeyRecord, KeyUse } from '../keys/record.js';
import type { ActivityStore } from './activity.js';

/** Emitted when something happens that must end live sessions (revocation across instances on Redis). */
export type StoreEvent =
  | { type: 'key-revoked'; id: string; account: string | null }
  | { type: 'account-changed'; address: string }
  | { type: 'events-resumed' };

/** What `countKeys` reports; `keygate_keys{state}`. */
export interface KeyCounts {
  active: number;
  revoked: number;
  /** Not revoked, past `expiresAt`. */
  expired: number;
}

export type KeyState = keyof KeyCounts;

/**
 * One page of a list. `nextCursor` null: nothing follows. A filtered page may
 * hold fewer than `limit` items (even none) and still name a next cursor: each
 * call examines a bounded number of records, so no page costs more than that.
 */
export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

/** Keys newest first (`createdAt`, then creation order), from `cursor` on. */
export interface KeyQuery {
  /** Only keys bound to this account (exact address). */
  account?: string;
  /** Absent: every state. */
  state?: KeyState;
  /** Only keys whose name starts with this (case-sensitive). */
  namePrefix?: string;
  /** Only keys whose account address starts with this (lowercase). */
  addressPrefix?: string;
  /** 1-1000; default 100. */
  limit?: number;
  /** From a previous page's `nextCursor`; InvalidCursorError when it is not one. */
  cursor?: string | null;
  /** The instant `state` is judged at (default now). */
  now?: Date;
}

/** Accounts by address, ascending, from `cursor` on. */
export interface AccountQuery {
  addressPrefix?: string;
  /** Only accounts with an upstream route of their own (`upstream` not null). */
  withUpstream?: boolean;
  limit?: number;
  cursor?: string | null;
}

/** Store options every implementation takes. */
export interface StoreLimits {
  /**
   * Most active keys one account may hold: a write that would make more is
   * refused with KeyLimitError, atomically (concurrent writers cannot
   * overshoot). Null: no limit.
   */
  keysPerAccount?: number | null;
}

export interface AccountPatch {
  displayName?: string | null;
  aliases?: string[];
  disabled?: boolean;
  upstream?: Record<string, unknown> | null;
}

/**
 * The one key store every surface checks keys against.
 *
 * Atomicity: `createKey`, `revokeKey`, `rotateKey`, `replaceDeviceKey`, `importKey`, `createAccount`,
 * `updateAccount` and `deleteAccount` are each all-or-nothing; readers never see
 * a half-written record. Every method rejects with StoreUnavailableError when
 * the backing store cannot be reached, NotFoundError / ConflictError as documented.
 *
 * Scale: no method walks the whole store. Counts come from counters kept in
 * the same transaction (or script) as each write; lists come in pages; what
 * walks one account's keys is bounded by the per-account limit.
 *
 * Key limit: `createKey`, `rotateKey`, `replaceDeviceKey` and `importKey`
 * refuse with KeyLimitError (a ConflictError), changing nothing, when the
 * write would leave the key's account with more active keys than
 * `StoreLimits.keysPerAccount`. A write that does not add an active key (a
 * rotation of an active key, a device replacement that revokes one, an import
 * of a revoked or expired record) is never refused for it.
 */
export interface KeyStore {
  readonly kind: 'sqlite' | 'redis';

  /** Login history, key networks and the webhook queue (src/store/activity.ts), beside the keys. */
  readonly activity: ActivityStore;

  /** Resolves when the store answers; rejects with StoreUnavailableError otherwise. */
  ping(): Promise<void>;

  /** ConflictError when the id or hash exists already; KeyLimitError (see above). */
  createKey(record: KeyRecord): Promise<void>;
  findByHash(hash: string): Promise<KeyRecord | null>;
  getKey(id: string): Promise<KeyRecord | null>;
  /** One page of keys; see KeyQuery. Stable under concurrent writes: a key present throughout is listed once. */
  listKeys(query?: KeyQuery): Promise<Page<KeyRecord>>;
  /** The account's active keys, newest first: at most the key limit (and never more than 1,000). */
  activeKeys(account: string, now?: Date): Promise<KeyRecord[]>;
  /** Keys by state, from counters: costs the same at a thousand keys and at a million. */
  countKeys(now?: Date): Promise<KeyCounts>;
  /** Sets revokedAt (idempotent: an already revoked key keeps its first revokedAt). NotFoundError for an unknown id. */
  revokeKey(id: string, at: string): Promise<KeyRecord>;
  /**
   * Revokes `oldId` and creates `replacement` in one step: no reader ever sees
   * both active, nor neither. NotFoundError for an unknown id; ConflictError
   * when the old key is already revoked (so two concurrent rotations: exactly one wins).
   * `replacement.rotatedFrom` must be `oldId`.
   */
  rotateKey(oldId: string, replacement: KeyRecord, at: string): Promise<KeyRecord>;
  /**
   * One live key per device, in one step: revokes (revokedAt = `at`) every
   * non-revoked key with the same `account` and `deviceId` as `replacement`
   * (expired ones too), and creates `replacement`. No reader ever sees the new
   * key beside a live old one, nor the device without a key; concurrent calls
   * for one device, from any number of instances, serialise, so afterwards
   * exactly one key of the device is live (the last to commit). Keys of other
   * devices and accounts are untouched.
   *
   * The stored `rotatedFrom` is the id of the newest key revoked here (null
   * when there was none); `replacement.rotatedFrom` is ignored. Resolves to the
   * stored replacement and the keys it revoked, newest first. Emits one
   * `key-revoked` per revoked key. ConflictError, changing nothing, when the
   * replacement's id or hash exists, or it lacks an account or a deviceId.
   * Does not create the account record (see `ensureAccount`).
   */
  replaceDeviceKey(replacement: KeyRecord, at: string): Promise<{ key: KeyRecord; revoked: KeyRecord[] }>;
  /**
   * Records a use. Buffered and coalesced (last write per key wins), written
   * in the background; never awaited on the auth path.
   */
  touchKey(id: string, use: KeyUse): void;
  /** Writes buffered touches now. */
  flushTouches(): Promise<void>;
  /** Stores an exported record unless its id or hash is present. Creates the bound account if missing. */
  importKey(record: KeyRecord): Promise<'imported' | 'exists'>;

  /** ConflictError when the address or an alias is taken (as address or alias). */
  createAccount(account: AccountRecord): Promise<AccountRecord>;
  /** Returns the existing account, or creates one holding just the address. */
  ensureAccount(address: string, now?: string): Promise<AccountRecord>;
  getAccount(address: string): Promise<AccountRecord | null>;
  /** Finds the account whose address or alias is `name` (case-insensitive). */
  resolveAccount(name: string): Promise<AccountRecord | null>;
  /** One page of accounts; see AccountQuery. */
  listAccounts(query?: AccountQuery): Promise<Page<AccountRecord>>;
  /** NotFoundError for an unknown account; ConflictError when a new alias is taken. */
  updateAccount(address: string, patch: AccountPatch): Promise<AccountRecord>;
  /** Deletes the account and revokes every key bound to it. NotFoundError for an unknown account. */
  deleteAccount(address: string, at: string): Promise<void>;

  /**
   * Small shared values with a lifetime, for everything several instances must
   * agree on besides keys: console sessions, one-time links, locks, TLS ticket
   * keys, certificates. `name` is a namespaced id (`session:…`, `lock:…`);
   * `ttlMs` null keeps the value until deleted. With `onlyIfAbsent` an
   * existing unexpired value is left alone and the call resolves false.
   */
  putValue(name: string, value: string, ttlMs: number | null, options?: { onlyIfAbsent?: boolean }): Promise<boolean>;
  /** The value, or null when absent or expired. */
  getValue(name: string): Promise<string | null>;
  /** Removes and returns the value in one atomic step: of two concurrent takes, at most one gets it. */
  takeValue(name: string): Promise<string | null>;
  /** Removes the value; with `ifValue`, only while it still equals that (releasing a lock one holds). Resolves whether it removed one. */
  deleteValue(name: string, ifValue?: string): Promise<boolean>;
  /**
   * Adds `amount` (may be negative) to the integer counter `name` and resolves
   * the new total, in one atomic step across every instance. An absent or
   * expired counter starts from 0 with the lifetime `ttlMs` (null: none); a
   * live one keeps the lifetime it started with (a fixed window). The counter
   * is a value like any other: getValue reads it, deleteValue drops it.
   */
  addToCounter(name: string, amount: number, ttlMs: number | null): Promise<number>;

  /**
   * The keys with these ids and the accounts with these addresses, in the
   * order asked (null where there is none), in one batched lookup per kind:
   * the open-session re-check, which must not cost a round trip per session.
   */
  getKeys(ids: readonly string[]): Promise<(KeyRecord | null)[]>;
  getAccounts(addresses: readonly string[]): Promise<(AccountRecord | null)[]>;

  /**
   * Receives revocation and account events, from this instance and (on Redis)
   * every other. On Redis, `events-resumed` says the event subscription came
   * back after a disconnect: events published meanwhile may be lost.
   */
  subscribe(listener: (event: StoreEvent) => void): () => void;

  /** Flushes buffered touches and closes connections. */
  close(): Promise<void>;
}
