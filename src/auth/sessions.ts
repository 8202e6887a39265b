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
  private readonly log: Logger;

  constructor(
    private readonly store: KeyStore,
    logger: Logger,
    private readonly metrics?: Metrics,
  ) {
    this.log = logger.child({ component: 'sessions' });
  }

  /** Subscribes to store events and starts the expiry sweep (unref'd). Idempotent. */
  start(): void {
    if (this.unsubscribe) return;
    this.unsubscribe = this.store.subscribe((event) => this.onEvent(event));
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_MS);
    this.sweepTimer.unref();
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
