import { hash } from 'node:crypto';
import { RateLimiterMemory, RateLimiterRedis, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { createRedisClient, waitReady, type RedisClient } from '../store/redis-connect.js';
import type { LoginLimiter, LoginReservation } from './authenticate.js';
import { ipBucket } from './ip-bucket.js';

export { ipBucket };

export interface LoginLimiterWithClose extends LoginLimiter {
  close(): Promise<void>;
}

export interface LoginLimiterOptions {
  /** Key prefix in Redis (default 'keygate:limit'); tests use their own to stay apart. */
  keyPrefix?: string;
  /**
   * Count repeats of the very same failed credential (same IP, account and
   * presented key) within this many ms as one failure. A client that retries a
   * refused login with each SASL mechanism it knows presents nothing new, so
   * the repeats are not new guesses. 0 (default) counts every failure.
   */
  dedupeMs?: number;
}

/** Warnings about an unreachable Redis are logged at most this often. */
const WARN_EVERY_MS = 10_000;
/** How long start-up waits for Redis; after that the limiter starts anyway and fails open until Redis answers. */
const READY_WAIT_MS = 3000;
/** Entries kept for de-duplication (oldest dropped first). */
const DEDUPE_MAX = 10_000;
/**
 * Repeats of one failed credential given back within the dedupe window: a
 * client's mechanisms and its own retries, with room to spare. Past this the
 * repeats count, so replaying one wrong key cannot hit the store unbounded.
 */
const DEDUPE_REPEATS = 5;
/**
 * A credential (account + key) that logged in is known good this long after
 * its last success: it logs in even while its IP is over the failure limit.
 * Under 24.8 days, the longest timer Node keeps (the memory backend sets one per entry).
 */
const KNOWN_GOOD_SECONDS = 14 * 24 * 3600;
/** A success re-marks its credential known good at most this often per instance (a busy key would otherwise write on every login). */
const KNOWN_GOOD_REFRESH_MS = 3600_000;
/** Credentials whose last marking this instance remembers (oldest dropped first). */
const KNOWN_GOOD_CACHE_MAX = 50_000;

/** Account + presented-key bucket: a fixed-size digest, so long usernames cannot bloat Redis or memory. */
export function accountKeyBucket(account: string, keyHash: string): string {
  // One-shot hash: the same digest as hashing the parts in turn, without a Hash object per attempt.
  return hash('sha256', `${account.trim().toLowerCase()}\0${keyHash}`, 'hex').slice(0, 32);
}

/**
 * Failed-login limits (rate-limiter-flexible), per client IP (`auth.ipFailures`
 * per `auth.failureWindow`; IPv6 by /64) and per (account, presented key)
 * (`auth.accountFailures` per window).
 *
 * Reserve first: every attempt takes a point from its IP's budget,
 * atomically (an INCR in Redis, a synchronous update in memory), before the
 * store is asked; over the limit it gives it back and is refused. A success,
 * or an attempt the store could not answer, gives its point back; a failure
 * keeps it, except a repeat of the very same failure within `dedupeMs` (a
 * client retrying with each mechanism it knows). So however many attempts
 * arrive at once from one IP, at most the limit's worth reach the store.
 *
 * The (account, key) count is read before and added to after a failure: it
 * holds back one stale credential, not a burst (each guess is another key,
 * and the IP reservation bounds those), and a valid credential used by many
 * connections at once must not trip it by being in flight.
 *
 * The limit stops guessing, not users: an (account, key) pair that logged in
 * within KNOWN_GOOD_SECONDS is known good, and logs in even while its IP is
 * over the limit (behind a NAT shared with an attacker, or beside a device
 * with a stale key). Its own (account, key) limit still applies.
 *
 * Shared through Redis (its own client) when `dbs.redis` is set, in memory
 * otherwise. Never throws to the caller: when Redis fails, attempts are let
 * through uncounted, with a (rate-limited) warning. Windows are whole seconds
 * (rounded up), as rate-limiter-flexible keeps them.
 */
export async function createLoginLimiter(
  config: Pick<Config, 'auth' | 'dbs'>,
  logger: Logger,
  options: LoginLimiterOptions = {},
): Promise<LoginLimiterWithClose> {
  const log = logger.child({ component: 'login-limiter' });
  const duration = Math.max(1, Math.ceil(config.auth.failureWindow / 1000));
  const prefix = options.keyPrefix ?? 'keygate:limit';
  const ipPoints = Math.max(1, config.auth.ipFailures);
  const accountPoints = Math.max(1, config.auth.accountFailures);

  let lastWarn = 0;
  function warn(msg: string, err: unknown): void {
    const now = Date.now();
    if (now - lastWarn < WARN_EVERY_MS) return;
    lastWarn = now;
    log.warn({ err: err instanceof Error ? err.message : String(err) }, `${msg}; login limits fail open until it recovers`);
  }

  let redis: RedisClient | null = null;
  let byIp: RateLimiterAbstract;
  let byAccountKey: RateLimiterAbstract;
  let knownGood: RateLimiterAbstract;
  if (config.dbs.redis !== '') {
    // Its own client: fail fast while disconnected (no offline queue) and keep the login path from waiting long on a hung server.
    redis = createRedisClient(config.dbs.redis, { connectionName: 'keygate-limiter', commandTimeoutMs: 1000 });
    redis.on('error', (err: Error) => warn('redis connection error', err));
    await waitReady(redis, READY_WAIT_MS);
    const common = { storeClient: redis, rejectIfRedisNotReady: true, inMemoryBlockOnConsumed: 0 };
    byIp = new RateLimiterRedis({ ...common, duration, points: ipPoints, keyPrefix: `${prefix}:ip` });
    byAccountKey = new RateLimiterRedis({ ...common, duration, points: accountPoints, keyPrefix: `${prefix}:acct` });
    knownGood = new RateLimiterRedis({ ...common, duration: KNOWN_GOOD_SECONDS, points: 1, keyPrefix: `${prefix}:good` });
  } else {
    byIp = new RateLimiterMemory({ points: ipPoints, duration, keyPrefix: `${prefix}:ip` });
    byAccountKey = new RateLimiterMemory({ points: accountPoints, duration, keyPrefix: `${prefix}:acct` });
    knownGood = new RateLimiterMemory({ points: 1, duration: KNOWN_GOOD_SECONDS, keyPrefix: `${prefix}:good` });
  }

  /** Adds one point and returns the count with it: one atomic step, never a rejection at the limit. */
  const take = async (limiter: RateLimiterAbstract, key: string): Promise<number> => (await limiter.penalty(key, 1)).consumedPoints;
  const giveBack = (limiter: RateLimiterAbstract, key: string): Promise<void> =>
    limiter.reward(key, 1).then(
      () => undefined,
      (err: unknown) => warn('cannot give back a login attempt', err),
    );
  const isKnownGood = async (cred: string): Promise<boolean> => {
    try {
      return (await knownGood.get(cred)) !== null;
    } catch (err) {
      warn('cannot read the known-good credentials', err);
      return false;
    }
  };

  const recent = new Map<string, { at: number; repeats: number }>();
  const dedupeMs = options.dedupeMs ?? 0;
  /** True for a repeat of a failure of the same credential from the same IP seen within dedupeMs (at most DEDUPE_REPEATS of them). */
  const isRepeat = (ip: string, cred: string): boolean => {
    if (dedupeMs <= 0) return false;
    const now = Date.now();
    const id = `${ip}\0${cred}`;
    const seen = recent.get(id);
    if (seen && now - seen.at < dedupeMs) return ++seen.repeats <= DEDUPE_REPEATS;
    recent.delete(id);
    recent.set(id, { at: now, repeats: 0 });
    if (recent.size > DEDUPE_MAX) {
      for (const [k, v] of recent) {
        if (recent.size <= DEDUPE_MAX && now - v.at < dedupeMs) break;
        recent.delete(k);
      }
    }
    return false;
  };

  const marked = new Map<string, number>();
  /** Marks a credential known good, unless this instance did so within KNOWN_GOOD_REFRESH_MS. */
  const markKnownGood = async (cred: string): Promise<void> => {
    const now = Date.now();
    const last = marked.get(cred);
    if (last !== undefined && now - last < KNOWN_GOOD_REFRESH_MS) return;
    marked.delete(cred);
    marked.set(cred, now);
    if (marked.size > KNOWN_GOOD_CACHE_MAX) marked.delete(marked.keys().next().value!);
    try {
      await knownGood.set(cred, 1, KNOWN_GOOD_SECONDS);
    } catch (err) {
      marked.delete(cred);
      warn('cannot remember a good credential', err);
    }
  };

  /** What an attempt let through uncounted (Redis down) settles to. */
  const uncounted: LoginReservation = { settle: async () => {} };

  return {
    async reserve(req) {
      const ip = ipBucket(req.ip);
      const cred = accountKeyBucket(req.account, req.keyHash);
      const [ipTaken, credRead] = await Promise.allSettled([take(byIp, ip), byAccountKey.get(cred)]);
      if (ipTaken.status === 'rejected' || credRead.status === 'rejected') {
        warn('cannot count a login attempt', ipTaken.status === 'rejected' ? ipTaken.reason : (credRead as PromiseRejectedResult).reason);
        if (ipTaken.status === 'fulfilled') void giveBack(byIp, ip);
        return uncounted;
      }
      // Over either limit, the attempt is refused and records nothing: a stale device stops adding to its IP's count once its own limit trips.
      const credFailures = credRead.value?.consumedPoints ?? 0;
      if (credFailures >= accountPoints) {
        void giveBack(byIp, ip);
        return null;
      }
      let countsForIp = true;
      if (ipTaken.value > ipPoints) {
        void giveBack(byIp, ip);
        // A credential that logged in before is not a guess: it passes a limited IP, and does not count against it.
        if (!(await isKnownGood(cred))) return null;
        countsForIp = false;
      }
      let settled = false;
      return {
        async settle(outcome) {
          if (settled) return;
          settled = true;
          if (outcome === 'failure' && !isRepeat(ip, cred)) {
            // The IP's point stays taken; the credential's failure is counted now.
            await byAccountKey.penalty(cred, 1).catch((err: unknown) => warn('cannot count a failed login', err));
            return;
          }
          const done: Promise<unknown>[] = [];
          if (countsForIp) done.push(giveBack(byIp, ip));
          if (outcome === 'success') {
            done.push(markKnownGood(cred));
            if (credFailures > 0) done.push(byAccountKey.delete(cred).catch((err: unknown) => warn('cannot reset the login limit after a success', err)));
          }
          await Promise.all(done);
        },
      };
    },
    async close() {
      if (!redis) return;
      const client = redis;
      redis = null;
      await client.quit().catch(() => client.disconnect());
    },
  };
}
