import { createHash } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import { RateLimiterMemory, RateLimiterRedis, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { createRedisClient, waitReady, type RedisClient } from '../store/redis-connect.js';
import type { LoginLimiter } from './authenticate.js';

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

type LimitKey = { ip: string; account: string; keyHash: string };

/** Warnings about an unreachable Redis are logged at most this often. */
const WARN_EVERY_MS = 10_000;
/** How long start-up waits for Redis; after that the limiter starts anyway and fails open until Redis answers. */
const READY_WAIT_MS = 3000;
/** Entries kept for de-duplication (oldest dropped first). */
const DEDUPE_MAX = 10_000;

/**
 * The IP a failure is counted against: IPv4 as is (IPv4-mapped IPv6 too), IPv6
 * by its /64, since one host can hold a whole /64 and rotate through it.
 */
export function ipBucket(ip: string): string {
  try {
    const addr = ipaddr.process(ip);
    if (addr.kind() === 'ipv4') return addr.toString();
    const bytes = (addr as ipaddr.IPv6).toByteArray();
    for (let i = 8; i < 16; i++) bytes[i] = 0;
    return `${ipaddr.fromByteArray(bytes).toString()}/64`;
  } catch {
    return ip.slice(0, 64);
  }
}

/** Account + presented-key bucket: a fixed-size digest, so long usernames cannot bloat Redis or memory. */
export function accountKeyBucket(account: string, keyHash: string): string {
  return createHash('sha256').update(account.trim().toLowerCase()).update('\0').update(keyHash).digest('hex').slice(0, 32);
}

/**
 * Failed-login limits (rate-limiter-flexible): per client IP (`auth.ipFailures`
 * per `auth.failureWindow`) and per (account, presented key hash)
 * (`auth.accountFailures` per window), so a stale key on one device that trips
 * its limit does not lock out a valid key on another device of the same
 * account. A refused (rate-limited) attempt records nothing, so a stale device
 * stops adding to its IP's count once its own (account, key) limit trips.
 *
 * Shared through Redis (RateLimiterRedis, its own client) when `dbs.redis` is
 * set, in memory otherwise. Never throws to the caller: when Redis fails,
 * `allow` fails open and failures go uncounted, with a (rate-limited) warning.
 * Windows are whole seconds (rounded up), as rate-limiter-flexible keeps them.
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
  if (config.dbs.redis !== '') {
    // Its own client: fail fast while disconnected (no offline queue) and keep the login path from waiting long on a hung server.
    redis = createRedisClient(config.dbs.redis, { connectionName: 'keygate-limiter', commandTimeoutMs: 1000 });
    redis.on('error', (err: Error) => warn('redis connection error', err));
    await waitReady(redis, READY_WAIT_MS);
    const common = { storeClient: redis, duration, rejectIfRedisNotReady: true, inMemoryBlockOnConsumed: 0 };
    byIp = new RateLimiterRedis({ ...common, points: ipPoints, keyPrefix: `${prefix}:ip` });
    byAccountKey = new RateLimiterRedis({ ...common, points: accountPoints, keyPrefix: `${prefix}:acct` });
  } else {
    byIp = new RateLimiterMemory({ points: ipPoints, duration, keyPrefix: `${prefix}:ip` });
    byAccountKey = new RateLimiterMemory({ points: accountPoints, duration, keyPrefix: `${prefix}:acct` });
  }

  const consumed = async (limiter: RateLimiterAbstract, key: string): Promise<number> => (await limiter.get(key))?.consumedPoints ?? 0;

  const recent = new Map<string, number>();
  const dedupeMs = options.dedupeMs ?? 0;
  const isRepeat = (req: LimitKey): boolean => {
    if (dedupeMs <= 0) return false;
    const now = Date.now();
    const id = `${req.ip}\0${accountKeyBucket(req.account, req.keyHash)}`;
    const seen = recent.get(id);
    recent.delete(id);
    recent.set(id, now);
    if (recent.size > DEDUPE_MAX) {
      for (const [k, at] of recent) {
        if (recent.size <= DEDUPE_MAX && now - at < dedupeMs) break;
        recent.delete(k);
      }
    }
    return seen !== undefined && now - seen < dedupeMs;
  };

  return {
    async allow(req) {
      try {
        const [ip, acct] = await Promise.all([consumed(byIp, ipBucket(req.ip)), consumed(byAccountKey, accountKeyBucket(req.account, req.keyHash))]);
        return ip < ipPoints && acct < accountPoints;
      } catch (err) {
        warn('cannot read login limits', err);
        return true;
      }
    },
    async recordFailure(req) {
      if (isRepeat(req)) return;
      try {
        // penalty() adds a point without rejecting at the limit (consume() would reject with a RateLimiterRes).
        await Promise.all([byIp.penalty(ipBucket(req.ip), 1), byAccountKey.penalty(accountKeyBucket(req.account, req.keyHash), 1)]);
      } catch (err) {
        warn('cannot record a failed login', err);
      }
    },
    async recordSuccess(req) {
      try {
        await byAccountKey.delete(accountKeyBucket(req.account, req.keyHash));
      } catch (err) {
        warn('cannot reset the login limit after a success', err);
      }
    },
    async close() {
      if (!redis) return;
      const client = redis;
      redis = null;
      await client.quit().catch(() => client.disconnect());
    },
  };
}

