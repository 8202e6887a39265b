import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { normalizeAddress } from '../keys/record.js';
import type { Protocol } from '../keys/scopes.js';
import type { KeyStore, StoreEvent } from '../store/types.js';

export type EndReason = 'revoked' | 'expired' | 'account_disabled' | 'shutdown';

/** How each protocol tells a client why its session was ended from outside. */
export const END_REASON_TEXT: Record<EndReason, string> = {
  revoked: 'key revoked',
  expired: 'key expired',
  account_disabled: 'account disabled',
  shutdown: 'server shutting down',
};

export interface LiveSession {
  protocol: Protocol;
  keyId: string;
  account: string;
  expiresAt: string | null;
  /** Says goodbye in protocol terms (IMAP `* BYE`, POP3 `-ERR`, SMTP `421`) and closes. Called at most once. */
  end(reason: EndReason): void;
}

/** How often expired keys are looked for. */
const SWEEP_MS = 250;
/** Default for `sessions.recheckInterval`. */
export const RECHECK_INTERVAL_MS = 30_000;
/**
 * A re-check after the subscription resumed that found the store unreachable
 * (its other connection not back yet) is tried again this soon, then at
 * doubling intervals up to the periodic one, until it succeeds: waiting for
 * the periodic one would leave a revoked session open for up to 30 s.
 */
const RECHECK_RETRY_MS = 250;

export interface SessionRegistryOptions {
  /**
   * How often every open session's key and account are read again from the
   * store, in one batched lookup, ms (default 30 s; 0 = only after the event
   * subscription resumes). Events are the fast path; this catches what an
   * event lost in a split between this instance and Redis would miss.
   */
  recheckIntervalMs?: number;
}

/** What one re-check found, by reason. */
export type RecheckResult = { checked: number; ended: Partial<Record<EndReason, number>> };
/** Revocations and disablements are remembered this long, to catch a session registered just after its event. */
const REMEMBER_MS = 60_000;

interface Entry {
  session: LiveSession;
  account: string;
  expiresAtMs: number | null;
}

/**
 * Live sessions by key and account, so a revoked, rotated-away or expired key,
 * or a disabled or deleted account, ends its open sessions within a second.
 * Store events arrive from this instance and, on Redis, from every other.
 */
export class SessionRegistry {
  private readonly entries = new Map<LiveSession, Entry>();
  private readonly byKey = new Map<string, Set<LiveSession>>();
  private readonly byAccount = new Map<string, Set<LiveSession>>();
  private readonly expiring = new Set<LiveSession>();
  private readonly revokedKeys = new Map<string, number>();
  private readonly disabledAccounts = new Map<string, number>();
  private unsubscribe: (() => void) | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private recheckTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  /** The next retry's delay; 0 while no re-check has failed since the last success. */
  private retryDelayMs = 0;
  /** The re-check running now, and whether another was asked for meanwhile (it then runs once more, after). */
  private rechecking: Promise<RecheckResult> | null = null;
  private recheckAgain = false;
  private readonly recheckIntervalMs: number;
  private readonly log: Logger;

  constructor(
    private readonly store: KeyStore,
    logger: Logger,
    private readonly metrics?: Metrics,
    options: SessionRegistryOptions = {},
  ) {
    this.log = logger.child({ component: 'sessions' });
    this.recheckIntervalMs = options.recheckIntervalMs ?? RECHECK_INTERVAL_MS;
  }

  /** Subscribes to store events and starts the expiry sweep and the periodic re-check (unref'd). Idempotent. */
  start(): void {
    if (this.unsubscribe) return;
    this.unsubscribe = this.store.subscribe((event) => this.onEvent(event));
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweepTimer.unref();
    if (this.recheckIntervalMs > 0) {
      this.recheckTimer = setInterval(() => void this.recheck('periodic'), this.recheckIntervalMs);
      this.recheckTimer.unref();
    }
  }

  /**
   * Registers a logged-in session; returns the function that removes it (call
   * it when the session closes; calling it again does nothing). A session whose
   * key was revoked or whose account was disabled moments before is ended on
   * the next turn of the event loop.
   */
  add(session: LiveSession): () => void {
    const account = normalizeAddress(session.account);
    const expiresAtMs = session.expiresAt === null ? null : Date.parse(session.expiresAt);
    const entry: Entry = { session, account, expiresAtMs: Number.isNaN(expiresAtMs) ? null : expiresAtMs };
    this.entries.set(session, entry);
    setAdd(this.byKey, session.keyId, session);
    setAdd(this.byAccount, account, session);
    if (entry.expiresAtMs !== null) this.expiring.add(session);
    this.metrics?.sessions.inc({ protocol: session.protocol });

    if (this.revokedKeys.has(session.keyId)) setImmediate(() => this.end(session, 'revoked'));
    else if (this.disabledAccounts.has(account)) setImmediate(() => this.end(session, 'account_disabled'));
    return () => this.remove(session);
  }

  count(protocol?: string): number {
    if (protocol === undefined) return this.entries.size;
    let n = 0;
    for (const s of this.entries.keys()) if (s.protocol === protocol) n++;
    return n;
  }

  /** Ends every session (e.g. 'shutdown'). */
  endAll(reason: EndReason): void {
    for (const s of [...this.entries.keys()]) this.end(s, reason);
  }

  /** Unsubscribes and stops the sweep; open sessions stay registered. */
  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    if (this.recheckTimer) clearInterval(this.recheckTimer);
    this.recheckTimer = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /**
   * Reads the key and account of every open session from the store (one
   * batched lookup each) and ends the sessions whose key is revoked, gone or
   * expired, or whose account is disabled or gone. Runs after the store's
   * event subscription resumes and every `recheckIntervalMs`; concurrent calls
   * share one run (and one more follows it). Never throws: when the store
   * cannot answer, it logs a warning and ends nothing.
   */
  recheck(trigger: 'resubscribe' | 'periodic' | 'manual' = 'manual'): Promise<RecheckResult> {
    if (this.rechecking) {
      this.recheckAgain = true;
      return this.rechecking;
    }
    const run = this.recheckOnce(trigger).finally(() => {
      this.rechecking = null;
      if (this.recheckAgain) {
        this.recheckAgain = false;
        void this.recheck(trigger);
      }
    });
    this.rechecking = run;
    return run;
  }

  private async recheckOnce(trigger: string): Promise<RecheckResult> {
    const snapshot = [...this.entries.values()];
    const result: RecheckResult = { checked: snapshot.length, ended: {} };
    if (snapshot.length === 0) return result;
    const keyIds = [...new Set(snapshot.map((e) => e.session.keyId))];
    const addresses = [...new Set(snapshot.map((e) => e.account))];
    let keys, accounts;
    try {
      [keys, accounts] = await Promise.all([this.store.getKeys(keyIds), this.store.getAccounts(addresses)]);
    } catch (err) {
      const retry = trigger === 'resubscribe' && this.unsubscribe !== null;
      // One warning per outage, not one per retry.
      const level = this.retryDelayMs === 0 ? 'warn' : 'debug';
      this.log[level]({ trigger, sessions: snapshot.length, err: (err as Error).message }, retry ? 'cannot re-check open sessions; trying again shortly' : 'cannot re-check open sessions; trying again later');
      if (retry && !this.retryTimer) {
        this.retryDelayMs = this.retryDelayMs === 0 ? RECHECK_RETRY_MS : Math.min(this.retryDelayMs * 2, this.recheckIntervalMs || RECHECK_INTERVAL_MS);
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          void this.recheck('resubscribe');
        }, this.retryDelayMs);
        this.retryTimer.unref();
      }
      return result;
    }
    this.retryDelayMs = 0;
    const now = Date.now();
    const keyEnd = new Map<string, EndReason>();
    keyIds.forEach((id, i) => {
      const k = keys[i];
      if (!k || k.revokedAt !== null) keyEnd.set(id, 'revoked');
      else if (k.expiresAt !== null && Date.parse(k.expiresAt) <= now) keyEnd.set(id, 'expired');
    });
    const disabled = new Set(addresses.filter((_, i) => !accounts[i] || accounts[i]!.disabled));
    for (const [id, reason] of keyEnd) if (reason === 'revoked') remember(this.revokedKeys, id);
    for (const a of disabled) remember(this.disabledAccounts, a);
    for (const { session, account } of snapshot) {
      const reason = keyEnd.get(session.keyId) ?? (disabled.has(account) ? 'account_disabled' : null);
      if (reason === null || !this.entries.has(session)) continue;
      this.end(session, reason);
      result.ended[reason] = (result.ended[reason] ?? 0) + 1;
    }
    const ended = Object.values(result.ended).reduce((a, b) => a + b, 0);
    // Each ended session has its own 'ending session' line; this one says why they were looked at.
    if (ended > 0) this.log.info({ trigger, checked: result.checked, ended: result.ended }, 'session re-check ended sessions an event had not');
    else this.log.debug({ trigger, checked: result.checked }, 'session re-check: all open sessions still valid');
    return result;
  }

  private remove(session: LiveSession): boolean {
    const entry = this.entries.get(session);
    if (!entry) return false;
    this.entries.delete(session);
    setDelete(this.byKey, session.keyId, session);
    setDelete(this.byAccount, entry.account, session);
    this.expiring.delete(session);
    this.metrics?.sessions.dec({ protocol: session.protocol });
    return true;
  }

  /** Removes, then ends: so `end` runs at most once per session even if it re-enters. */
  private end(session: LiveSession, reason: EndReason): void {
    if (!this.remove(session)) return;
    this.log.info({ protocol: session.protocol, keyId: session.keyId, account: session.account, reason }, 'ending session');
    try {
      session.end(reason);
    } catch (err) {
      this.log.error({ err, protocol: session.protocol, keyId: session.keyId }, 'session end() threw');
    }
  }

  private onEvent(event: StoreEvent): void {
    if (event.type === 'events-resumed') {
      // Revocations published while the subscription was down are lost: look at every open session instead.
      this.log.warn({ sessions: this.entries.size }, 'store event subscription resumed after a disconnect; re-checking open sessions');
      void this.recheck('resubscribe');
      return;
    }
    if (event.type === 'key-revoked') {
      remember(this.revokedKeys, event.id);
      for (const s of [...(this.byKey.get(event.id) ?? [])]) this.end(s, 'revoked');
      return;
    }
    const address = normalizeAddress(event.address);
    void this.checkAccount(address);
  }

  private async checkAccount(address: string): Promise<void> {
    let account;
    try {
      account = await this.store.getAccount(address);
    } catch (err) {
      // Cannot tell: leave the sessions; a revocation still arrives as key-revoked.
      this.log.warn({ err: (err as Error).message, account: address }, 'cannot re-read a changed account');
      return;
    }
    if (account && !account.disabled) {
      this.disabledAccounts.delete(address);
      return;
    }
    remember(this.disabledAccounts, address);
    for (const s of [...(this.byAccount.get(address) ?? [])]) this.end(s, 'account_disabled');
  }

  private sweep(): void {
    const now = Date.now();
    for (const s of [...this.expiring]) {
      const at = this.entries.get(s)?.expiresAtMs;
      if (at !== undefined && at !== null && at <= now) this.end(s, 'expired');
    }
    for (const memo of [this.revokedKeys, this.disabledAccounts]) {
      for (const [k, at] of memo) {
        if (now - at < REMEMBER_MS) break; // insertion order = time order
        memo.delete(k);
      }
    }
  }
}

/** Re-inserts, so the map stays in time order for the pruning in sweep(). */
function remember(map: Map<string, number>, key: string): void {
  map.delete(key);
  map.set(key, Date.now());
}

function setAdd<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(value);
}

function setDelete<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (!set) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}
