import type { Metrics } from '../metrics.js';

const HOUR_MS = 60 * 60_000;
const SAMPLE_MS = 60_000;

interface Sample {
  at: number;
  /** Cumulative attempts by `protocol|result`. */
  totals: Map<string, number>;
}

export interface LoginCounts {
  /** Since when the counts run (start of the window, or this instance's start if later). */
  since: string;
  byProtocol: Record<string, { success: number; failure: number }>;
}

/**
 * Logins and failures in the last hour, per protocol, for the console's
 * overview: differences of the `keygate_auth_attempts_total` counter against
 * a sample taken once a minute, so nothing is added to the login path. Counts
 * this instance only, as the metrics do.
 */
export class LoginStats {
  private readonly samples: Sample[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly metrics: Metrics) {}

  async start(): Promise<void> {
    this.samples.push(await this.sample());
    this.timer = setInterval(() => {
      void this.sample().then((s) => {
        this.samples.push(s);
        while (this.samples.length > 1 && s.at - this.samples[1]!.at >= HOUR_MS) this.samples.shift();
      });
    }, SAMPLE_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async lastHour(): Promise<LoginCounts> {
    const now = await this.sample();
    const base = this.samples.find((s) => now.at - s.at <= HOUR_MS) ?? now;
    const byProtocol: LoginCounts['byProtocol'] = {};
    for (const [label, total] of now.totals) {
      const [protocol, result] = label.split('|') as [string, string];
      const n = total - (base.totals.get(label) ?? 0);
      const row = (byProtocol[protocol] ??= { success: 0, failure: 0 });
      if (result === 'success') row.success += n;
      else row.failure += n;
    }
    return { since: new Date(base.at).toISOString(), byProtocol };
  }

  private async sample(): Promise<Sample> {
    const totals = new Map<string, number>();
    for (const v of (await this.metrics.authAttempts.get()).values) totals.set(`${String(v.labels.protocol)}|${String(v.labels.result)}`, v.value);
    return { at: Date.now(), totals };
  }
}
