import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { RedisClient } from '../store/redis-connect.js';

/**
 * One-time setup links: `/setup/{token}` serves a pending profile once, for a
 * short time.
 *
 * The pending profile holds a raw key, and Keygate never stores raw keys, so
 * what is stored is useless without the token: the token (256 random bits,
 * only ever in the link given to the user) derives, by HKDF, both the storage
 * id and an AES-256-GCM key; the backend holds `id → ciphertext`. Neither a
 * memory dump of the map nor a Redis dump yields the key, and a stored entry
 * cannot be matched to a link without the token.
 *
 * Backends are behind `SetupLinkBackend` (put / atomic take / has):
 *  - `MemorySetupLinkBackend`: in-process, for a single instance (SQLite store).
 *  - `RedisSetupLinkBackend`: shared, for several instances behind one name
 *    (Redis store): `SET … PX ttl NX` and an atomic GET+DEL script, one key per
 *    link (so Cluster is fine).
 */

/** Default lifetime of a setup link: long enough to scan a code, short enough to be worthless later. */
export const DEFAULT_SETUP_LINK_TTL_MS = 10 * 60_000;

const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;

/** Storage for sealed pending profiles. Every method may reject when the storage is unreachable. */
export interface SetupLinkBackend {
  readonly kind: 'memory' | 'redis';
  /** Stores `value` under `id` for `ttlMs`. Never overwrites: rejects if `id` exists. */
  put(id: string, value: string, ttlMs: number): Promise<void>;
  /** Removes and returns the value in one atomic step (of two concurrent takes, at most one gets it); null when absent or expired. */
  take(id: string): Promise<string | null>;
  /** Whether `id` is present and unexpired, without consuming it. */
  has(id: string): Promise<boolean>;
  /** Releases what the backend owns (never a Redis client it was handed). */
  close(): Promise<void>;
}

/** The memory backend is full of live links; the caller should answer 503. */
export class SetupLinkCapacityError extends Error {
  constructor() {
    super('Too many pending setup links; try again in a few minutes');
    this.name = 'SetupLinkCapacityError';
  }
}

export class MemorySetupLinkBackend implements SetupLinkBackend {
  readonly kind = 'memory' as const;
  private readonly entries = new Map<string, { value: string; expiresAt: number }>();
  private readonly maxEntries: number;
  private readonly now: () => number;
  private lastSweep = 0;

  constructor(opts: { maxEntries?: number; now?: () => number } = {}) {
    this.maxEntries = opts.maxEntries ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  async put(id: string, value: string, ttlMs: number): Promise<void> {
    const now = this.now();
    if (now - this.lastSweep > 60_000 || this.entries.size >= this.maxEntries) this.sweep(now);
    if (this.entries.size >= this.maxEntries) throw new SetupLinkCapacityError();
    const existing = this.entries.get(id);
    if (existing && existing.expiresAt > now) throw new Error('setup link id already in use');
    this.entries.set(id, { value, expiresAt: now + ttlMs });
  }

  async take(id: string): Promise<string | null> {
    const e = this.entries.get(id);
    if (!e) return null;
    this.entries.delete(id);
    return e.expiresAt > this.now() ? e.value : null;
  }

  async has(id: string): Promise<boolean> {
    const e = this.entries.get(id);
    return e !== undefined && e.expiresAt > this.now();
  }

  /** Number of stored entries, expired ones included until the next sweep (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }

  async close(): Promise<void> {
    this.entries.clear();
  }

  private sweep(now: number): void {
    this.lastSweep = now;
    for (const [id, e] of this.entries) if (e.expiresAt <= now) this.entries.delete(id);
  }
}

// GET and DEL in one script: works on every Redis version (GETDEL needs 6.2) and on one slot in Cluster.
const TAKE_SCRIPT = "local v = redis.call('GET', KEYS[1]) if v then redis.call('DEL', KEYS[1]) end return v";

export class RedisSetupLinkBackend implements SetupLinkBackend {
  readonly kind = 'redis' as const;

  /** `redis` stays the caller's: close() does not quit it. */
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix = 'keygate:setup:',
  ) {}

  async put(id: string, value: string, ttlMs: number): Promise<void> {
    const ok = await this.redis.set(this.prefix + id, value, 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX');
    if (ok !== 'OK') throw new Error('setup link id already in use');
  }

  async take(id: string): Promise<string | null> {
    const v = await this.redis.eval(TAKE_SCRIPT, 1, this.prefix + id);
    return typeof v === 'string' ? v : null;
  }

  async has(id: string): Promise<boolean> {
    return (await this.redis.exists(this.prefix + id)) === 1;
  }

  async close(): Promise<void> {}
}

/** What a link serves. */
export interface PendingProfile {
  body: Buffer;
  contentType: string;
  filename: string;
}

export interface CreatedSetupLink {
  /** Goes in the URL and nowhere else. */
  token: string;
  /** `/setup/{token}` (prefix it with the public origin). */
  path: string;
  expiresAt: string;
}

export type RedeemResult =
  | { status: 'ok'; profile: PendingProfile }
  /** Used, expired, or never issued: indistinguishable on purpose. */
  | { status: 'gone' }
  /** Not a token at all (wrong length or characters): a mistyped link. */
  | { status: 'malformed' };

export type LinkState = 'live' | 'gone' | 'malformed';

export interface SetupLinksOptions {
  /** Lifetime of a new link in milliseconds; default DEFAULT_SETUP_LINK_TTL_MS. */
  ttlMs?: number;
  now?: () => number;
}

interface Sealed {
  /** Expiry, ms since the epoch (checked on redeem as well as by the backend's TTL). */
  x: number;
  t: string;
  f: string;
  /** Body, base64. */
  b: string;
}

/** The one-time link service: seals, stores, redeems once. */
export class SetupLinks {
  readonly ttlMs: number;
  private readonly now: () => number;

  constructor(
    readonly backend: SetupLinkBackend,
    opts: SetupLinksOptions = {},
  ) {
    this.ttlMs = opts.ttlMs ?? DEFAULT_SETUP_LINK_TTL_MS;
    if (!Number.isSafeInteger(this.ttlMs) || this.ttlMs <= 0) throw new RangeError('setup link TTL must be a positive number of milliseconds');
    this.now = opts.now ?? Date.now;
  }

  /** True when `token` has the shape of a setup token (43 base64url characters). */
  static isWellFormed(token: string): boolean {
    return TOKEN_RE.test(token);
  }

  /**
   * Seals and stores `profile`; returns the token, once.
   * @throws SetupLinkCapacityError (memory backend full), or the backend's error when it is unreachable.
   */
  async create(profile: PendingProfile): Promise<CreatedSetupLink> {
    const token = randomBytes(32).toString('base64url');
    const { id, key } = derive(token);
    const expiresAt = this.now() + this.ttlMs;
    const sealed: Sealed = { x: expiresAt, t: profile.contentType, f: profile.filename, b: profile.body.toString('base64') };
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(Buffer.from(id));
    const ct = Buffer.concat([cipher.update(JSON.stringify(sealed), 'utf8'), cipher.final()]);
    const value = `v1.${Buffer.concat([iv, cipher.getAuthTag(), ct]).toString('base64url')}`;
    await this.backend.put(id, value, this.ttlMs);
    return { token, path: setupPath(token), expiresAt: new Date(expiresAt).toISOString() };
  }

  /**
   * Takes the profile: the first call for a live token gets it, every later
   * call (and any call after expiry) gets `gone`.
   * @throws the backend's error when it is unreachable.
   */
  async redeem(token: string): Promise<RedeemResult> {
    if (!SetupLinks.isWellFormed(token)) return { status: 'malformed' };
    const { id, key } = derive(token);
    const value = await this.backend.take(id);
    if (value === null) return { status: 'gone' };
    const sealed = open(value, id, key);
    if (!sealed || sealed.x <= this.now()) return { status: 'gone' };
    return { status: 'ok', profile: { body: Buffer.from(sealed.b, 'base64'), contentType: sealed.t, filename: sealed.f } };
  }

  /** Whether the link would still serve its profile, without consuming it. */
  async state(token: string): Promise<LinkState> {
    if (!SetupLinks.isWellFormed(token)) return 'malformed';
    return (await this.backend.has(derive(token).id)) ? 'live' : 'gone';
  }

  async close(): Promise<void> {
    await this.backend.close();
  }
}

/** The path a token is served at. */
export function setupPath(token: string): string {
  return `/setup/${token}`;
}

function derive(token: string): { id: string; key: Buffer } {
  const ikm = Buffer.from(token, 'base64url');
  const salt = Buffer.from('keygate setup link v1');
  const id = Buffer.from(hkdfSync('sha256', ikm, salt, 'id', 16)).toString('hex');
  const key = Buffer.from(hkdfSync('sha256', ikm, salt, 'key', 32));
  return { id, key };
}

function open(value: string, id: string, key: Buffer): Sealed | null {
  if (!value.startsWith('v1.')) return null;
  try {
    const raw = Buffer.from(value.slice(3), 'base64url');
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
    decipher.setAAD(Buffer.from(id));
    decipher.setAuthTag(raw.subarray(12, 28));
    const plain = Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
    return JSON.parse(plain) as Sealed;
  } catch {
    return null;
  }
}
