import type { AttemptRecord } from '../auth/attempt.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { HistoryBounds, NewLoginEntry } from '../store/activity.js';
import type { KeyStore } from '../store/types.js';
import { networkOf } from './network.js';
import type { KeyEvents } from './types.js';

/** Attempts are written at least this often… */
const FLUSH_MS = 1000;
/** …or as soon as this many wait. */
const BATCH = 2000;
/** Attempts waiting while the store is unreachable, at most; the oldest are dropped beyond. */
const MAX_WAITING = 20_000;
/** A good API key is one "login" per client and minute, not one per request. */
const HTTP_SUCCESS_EVERY_MS = 60_000;
/** Bounds of the in-process maps (keys and networks seen, HTTP clients, failure counts). */
const MAX_TRACKED = 50_000;
/** Longest name kept of an attempt that named no known account. */
const MAX_USERNAME = 100;

/**
 * The login history: every attempt the Authenticator decides (`onAttempt`)
 * is queued in memory at the cost of an array push and written to the store
 * in batches, off the login path. While writing it marks a key's first
 * success from a network (`key.new_network`) and counts failures per
 * account (`login.failures`).
 */
export class LoginHistory {
  private waiting: AttemptRecord[] = [];
  /** Entries made but not written (the store failed): written first next time. */
  private unwritten: NewLoginEntry[] = [];
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private readonly bounds: HistoryBounds;
  private readonly networksSeen = new Set<string>();
  private readonly httpSeen = new Map<string, number>();
  private readonly failures = new Map<string, { since: number; count: number }>();
  private dropped = 0;

  constructor(
    private readonly store: KeyStore,
    private readonly logger: Logger,
    private readonly settings: Config['events'],
    private readonly events: KeyEvents,
  ) {
    this.bounds = { maxPerAccount: settings.historyMax, retentionMs: settings.historyRetention };
  }

  /** The Authenticator's `onAttempt`: never blocks, never throws. */
  readonly record = (attempt: AttemptRecord): void => {
    if (attempt.protocol === 'http' && attempt.result === 'success' && !this.firstHttpUse(attempt)) return;
    this.waiting.push(attempt);
    if (this.waiting.length > MAX_WAITING) {
      this.dropped += this.waiting.length - MAX_WAITING;
      this.waiting.splice(0, this.waiting.length - MAX_WAITING);
    }
    if (this.waiting.length >= BATCH) this.flushSoon(0);
    else if (!this.timer) this.flushSoon(FLUSH_MS);
  };

  /** Writes what waits now (shutdown, tests). */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.flushing = this.flushing.then(() => this.write());
    await this.flushing;
  }

  async close(): Promise<void> {
    await this.flush();
  }

  private flushSoon(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flushing = this.flushing.then(() => this.write());
    }, ms);
    this.timer.unref();
  }

  private firstHttpUse(a: AttemptRecord): boolean {
    const id = `${a.keyId}\0${a.ip}\0${a.client?.name ?? ''}`;
    const last = this.httpSeen.get(id);
    if (last !== undefined && a.at - last < HTTP_SUCCESS_EVERY_MS) return false;
    if (this.httpSeen.size >= MAX_TRACKED) this.httpSeen.clear();
    this.httpSeen.set(id, a.at);
    return true;
  }

  private async write(): Promise<void> {
    if (this.dropped > 0) {
      this.logger.error({ dropped: this.dropped }, 'login history entries dropped: the store was unreachable or could not keep up');
      this.dropped = 0;
    }
    while (this.waiting.length > 0 || this.unwritten.length > 0) {
      const batch = this.waiting.splice(0, BATCH);
      let entries = this.unwritten;
      let made = false;
      this.unwritten = [];
      try {
        // Entries made once are kept as made: a retry must not lose their marks (a network is recorded only once).
        entries = [...entries, ...(await this.entries(batch))];
        made = true;
        await this.store.activity.appendLogins(entries, this.bounds);
        for (const e of entries) if (e.newNetwork) this.raiseNewNetwork(e);
      } catch (err) {
        this.unwritten = entries.slice(-MAX_WAITING);
        if (!made) this.waiting = [...batch, ...this.waiting].slice(-MAX_WAITING);
        this.logger.warn({ err, waiting: this.waiting.length + this.unwritten.length }, 'login history not written yet; will retry');
        this.flushSoon(FLUSH_MS * 4);
        return;
      }
    }
  }

  /** The stored form: failures naming no known account are kept apart, with the name tried. */
  private async entries(batch: AttemptRecord[]): Promise<NewLoginEntry[]> {
    const named = [...new Set(batch.filter((a) => a.result !== 'success' && a.account !== null).map((a) => a.account!))];
    const records = named.length > 0 ? await this.store.getAccounts(named) : [];
    const known = new Set(named.filter((_, i) => records[i] !== null));
    const out: NewLoginEntry[] = [];
    for (const a of batch) {
      const unknown = a.result !== 'success' && a.account !== null && !known.has(a.account);
      const entry: NewLoginEntry = {
        at: a.at,
        account: unknown ? null : a.account,
        keyId: a.keyId,
        protocol: a.protocol,
        method: a.method,
        ip: a.ip,
        result: a.result,
        reason: a.reason,
        client: a.client,
        // A name a client made up is printed by the CLI and the console: no control characters (terminal escapes).
        ...(unknown && { username: a.account!.replace(/[\u0000-\u001f\u007f-\u009f]/g, '').slice(0, MAX_USERNAME) }),
      };
      if (a.result === 'success' && a.keyId !== null) {
        // Most logins come from a network this instance has seen already: no store round trip, no await.
        const network = networkOf(a.ip, this.settings.newNetworkV4Prefix, this.settings.newNetworkV6Prefix);
        if (!this.networksSeen.has(`${a.keyId} ${network}`) && (await this.isNewNetwork(a.keyId, network, a.at))) entry.newNetwork = true;
      }
      if (a.result === 'failure' && entry.account !== null) this.countFailure(entry.account, a.at);
      out.push(entry);
    }
    return out;
  }

  private async isNewNetwork(keyId: string, network: string, at: number): Promise<boolean> {
    const id = `${keyId} ${network}`;
    const seen = await this.store.activity.addNetwork(keyId, network, at);
    if (this.networksSeen.size >= MAX_TRACKED) this.networksSeen.clear();
    this.networksSeen.add(id);
    return seen !== 'seen';
  }

  private raiseNewNetwork(e: NewLoginEntry): void {
    const network = networkOf(e.ip, this.settings.newNetworkV4Prefix, this.settings.newNetworkV6Prefix);
    this.events.raise('key.new_network', {
      account: e.account,
      keyId: e.keyId,
      time: new Date(e.at).toISOString(),
      data: { ip: e.ip, network, protocol: e.protocol, client: e.client },
    });
  }

  /** Counts a failure; at the threshold, `login.failures` once per window, once across instances. */
  private countFailure(account: string, at: number): void {
    const { failureThreshold: threshold, failureWindow: window } = this.settings;
    if (threshold === 0) return;
    let c = this.failures.get(account);
    if (!c || at - c.since >= window) {
      if (this.failures.size >= MAX_TRACKED) this.failures.clear();
      c = { since: at, count: 0 };
      this.failures.set(account, c);
    }
    if (++c.count !== threshold) return;
    const since = c.since;
    void this.store.putValue(`event:login-failures:${account}`, String(at), window, { onlyIfAbsent: true }).then(
      (first) => {
        if (!first) return;
        this.events.raise('login.failures', {
          account,
          time: new Date(at).toISOString(),
          data: { count: threshold, since: new Date(since).toISOString(), windowSeconds: Math.round(window / 1000) },
        });
      },
      (err: unknown) => this.logger.warn({ err, account }, 'login.failures not raised: store unavailable'),
    );
  }
}
