import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { KeyRecord } from '../keys/record.js';
import { allPages, PAGE_MAX } from '../store/paging.js';
import type { KeyStore } from '../store/types.js';
import type { KeyEvents } from './types.js';

/** A key that expired longer ago than this is not announced any more (a store restored from an old backup). */
const EXPIRED_LOOKBACK_MS = 7 * 24 * 60 * 60_000;

/**
 * Raises `key.expiring` (within `events.expiringBefore` of a key's expiry)
 * and `key.expired`, once per key each: a marker in the store's shared values
 * says it was raised, so several instances scanning raise it once.
 */
export class ExpiryWatch {
  private timer: NodeJS.Timeout | null = null;
  private scanning: Promise<void> | null = null;

  constructor(
    private readonly store: KeyStore,
    private readonly logger: Logger,
    private readonly settings: Config['events'],
    private readonly events: KeyEvents,
  ) {}

  start(): void {
    const tick = (): void => {
      this.scanning = this.scan().finally(() => (this.scanning = null));
    };
    this.timer = setInterval(tick, this.settings.expiryScanInterval);
    this.timer.unref();
    setImmediate(tick);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.scanning;
  }

  /** One pass over the keys; store errors are logged and the next pass tries again. */
  async scan(now = Date.now()): Promise<void> {
    try {
      // A page at a time over the non-revoked keys (the stores' live index), so a million keys never sit in memory.
      const at = new Date(now);
      for (const state of ['active', 'expired'] as const) {
        for await (const page of allPages((cursor) => this.store.listKeys({ state, now: at, cursor, limit: PAGE_MAX }))) {
          for (const key of page) await this.check(key, now);
        }
      }
    } catch (err) {
      this.logger.warn({ err }, 'key expiry scan failed; will retry');
    }
  }

  private async check(key: KeyRecord, now: number): Promise<void> {
    if (key.expiresAt === null || key.revokedAt !== null) return;
    const expires = Date.parse(key.expiresAt);
    const data = { name: key.name, expiresAt: key.expiresAt };
    if (expires <= now) {
      if (now - expires > EXPIRED_LOOKBACK_MS) return;
      if (await this.first(`event:key-expired:${key.id}`, EXPIRED_LOOKBACK_MS)) {
        this.events.raise('key.expired', { account: key.account, keyId: key.id, time: key.expiresAt, data });
      }
    } else if (expires - now <= this.settings.expiringBefore) {
      if (await this.first(`event:key-expiring:${key.id}`, expires - now + EXPIRED_LOOKBACK_MS)) {
        this.events.raise('key.expiring', { account: key.account, keyId: key.id, data: { ...data, inSeconds: Math.round((expires - now) / 1000) } });
      }
    }
  }

  private first(marker: string, ttlMs: number): Promise<boolean> {
    return this.store.putValue(marker, '1', ttlMs, { onlyIfAbsent: true });
  }
}
