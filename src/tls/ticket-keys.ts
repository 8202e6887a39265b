import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.js';
import type { KeyStore } from '../store/types.js';

/** Node's ticket key: 16 bytes key name, 16 bytes HMAC key, 16 bytes AES key. */
export const TICKET_KEY_BYTES = 48;
/** After a failed store read or write, try again this much later (the current key stays in use). */
const RETRY_MS = 10_000;

export type TicketKeyStore = Pick<KeyStore, 'putValue' | 'getValue'>;

/**
 * TLS session-ticket keys, the same on every instance and rotated.
 *
 * Time is cut into periods of `rotationMs`; period p's key lives in the store
 * as `tls:ticket-key:<p>`, made by whichever instance needs it first
 * (`onlyIfAbsent`, so two instances racing agree on the stored one) and kept
 * for two periods. Every instance switches at the same wall-clock moments, so
 * a ticket one instance issued resumes on any other. A ticket lives at most
 * until the end of its period: Node holds one ticket key per context, so a
 * ticket from the previous period gets a full handshake (and a new ticket).
 *
 * The handshake never waits on the store: the current key is in memory, and
 * when the store is unreachable the instance keeps (or makes) a key of its own
 * and tries again every 10 s — resumption then works on this instance only.
 */
export class TicketKeys {
  private key: Buffer = randomBytes(TICKET_KEY_BYTES);
  /** The period `key` belongs to, and whether it came from the store. */
  private period = -1;
  private shared = false;
  private failing = false;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly listeners = new Set<() => void>();

  constructor(
    private readonly store: TicketKeyStore | null,
    readonly rotationMs: number,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** The key for new tickets and for resuming. */
  current(): Buffer {
    return this.key;
  }

  /** Called after every change of key. */
  onRotate(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Loads the current period's key (when the store answers) and keeps rotating until stop(). */
  async start(): Promise<void> {
    await this.refresh();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.listeners.clear();
  }

  private async refresh(): Promise<void> {
    if (this.stopped) return;
    const period = Math.floor(this.now() / this.rotationMs);
    let retry = false;
    if (period !== this.period || (this.store !== null && !this.shared)) {
      try {
        this.use(period, await this.keyFor(period), this.store !== null);
        if (this.failing) this.log.info('shared TLS ticket key in use again');
        this.failing = false;
      } catch (err) {
        retry = true;
        // Once per outage, not once per retry.
        if (!this.failing) this.log.warn({ err: (err as Error).message }, 'cannot read or store the shared TLS ticket key; this instance uses its own until the store answers');
        this.failing = true;
        // Still rotate on time, with a key of our own.
        if (period !== this.period) this.use(period, randomBytes(TICKET_KEY_BYTES), false);
      }
    }
    if (this.stopped) return;
    const next = retry ? Math.min(RETRY_MS, this.rotationMs) : (period + 1) * this.rotationMs - this.now();
    this.timer = setTimeout(() => void this.refresh(), Math.max(0, next));
    this.timer.unref();
  }

  private use(period: number, key: Buffer, shared: boolean): void {
    const changed = !key.equals(this.key);
    this.period = period;
    this.shared = shared;
    this.key = key;
    if (!changed) return;
    for (const fn of this.listeners) {
      try {
        fn();
      } catch (err) {
        this.log.error({ err }, 'TLS ticket key listener failed');
      }
    }
  }

  private async keyFor(period: number): Promise<Buffer> {
    if (!this.store) return randomBytes(TICKET_KEY_BYTES);
    const name = `tls:ticket-key:${period}`;
    const mine = randomBytes(TICKET_KEY_BYTES).toString('base64');
    const ttl = 2 * this.rotationMs;
    if (await this.store.putValue(name, mine, ttl, { onlyIfAbsent: true })) return Buffer.from(mine, 'base64');
    const stored = await this.store.getValue(name);
    const key = stored === null ? null : Buffer.from(stored, 'base64');
    if (key?.length === TICKET_KEY_BYTES) return key;
    // Expired between the two calls, or damaged: replace it (a rare race costs one period of cross-instance resumption).
    await this.store.putValue(name, mine, ttl);
    return Buffer.from(mine, 'base64');
  }
}
