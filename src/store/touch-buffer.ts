import type { KeyUse } from '../keys/record.js';

/**
 * Coalesces last-use writes: the auth path records a use in memory (O(1), no
 * I/O) and a timer writes the newest use per key in one batch. A failed batch
 * is put back (unless newer uses arrived) and retried on the next tick.
 */
export class TouchBuffer {
  private pending = new Map<string, KeyUse>();
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<void> | null = null;
  private stopped = false;

  constructor(
    private readonly write: (batch: Map<string, KeyUse>) => Promise<void>,
    private readonly intervalMs = 1000,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  add(id: string, use: KeyUse): void {
    this.pending.set(id, use);
    this.arm();
  }

  private arm(): void {
    if (!this.timer && !this.stopped) {
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.flush().catch(this.onError);
      }, this.intervalMs);
      this.timer.unref();
    }
  }

  get size(): number {
    return this.pending.size;
  }

  async flush(): Promise<void> {
    if (this.inFlight) await this.inFlight;
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    this.inFlight = this.write(batch)
      .catch((err: unknown) => {
        for (const [id, use] of batch) if (!this.pending.has(id)) this.pending.set(id, use);
        this.arm(); // retry on the next tick even if no new use arrives
        throw err;
      })
      .finally(() => {
        this.inFlight = null;
      });
    await this.inFlight;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
