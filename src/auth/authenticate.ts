import { setTimeout as sleep } from 'node:timers/promises';
import { NO_BACKENDS, type BackendSessions, type Backends } from '../backends/types.js';
import { hashKey, isWellFormedKey } from '../keys/format.js';
import { decide, type Action } from '../keys/policy.js';
import type { AccountRecord, KeyRecord } from '../keys/record.js';
import { normalizeAddress } from '../keys/record.js';
import type { Protocol } from '../keys/scopes.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { StoreUnavailableError } from '../store/errors.js';
import type { KeyStore } from '../store/types.js';
import type {
  ApiAttempt,
  ApiLoggedIn,
  AttemptRecord,
  FailReason,
  LoginAttempt,
  LoginOutcome,
  MailAttempt,
  MailLoggedIn,
  Refused,
  SessionHandle,
  Temporary,
  TemporaryReason,
} from './attempt.js';
import type { SessionRegistry } from './sessions.js';

export type * from './attempt.js';

/** The limiter's view of one attempt: the IP, the account asked for ('' on HTTP) and the presented key's hash. */
export interface LimitKey {
  ip: string;
  account: string;
  keyHash: string;
}

/** Failed-attempt limits, consulted before the store and told how the attempt went (src/auth/limits.ts). */
export interface LoginLimiter {
  /** True when this IP/account/key may try now; false = a temporary refusal, no store lookup. */
  allow(req: LimitKey): Promise<boolean>;
  recordFailure(req: LimitKey): Promise<void>;
  recordSuccess?(req: LimitKey): Promise<void>;
}

export interface AuthenticatorDeps {
  store: KeyStore;
  logger: Logger;
  /** `auth.failureDelay`: every refusal is answered this long after the attempt began, ms. */
  failureDelayMs: number;
  metrics?: Metrics;
  /** Failed-attempt limits; none = unlimited. */
  limiter?: LoginLimiter | null;
  /** The live mail sessions, so revocation and expiry can end them; none = not tracked. */
  sessions?: SessionRegistry;
  /** Where logged-in mail sessions go; default none. */
  backends?: Backends;
  /** Sees every attempt's record once it is decided, after its audit line (login history). */
  onAttempt?: (record: AttemptRecord) => void;
}

/** An attempt as decided, before the surface's answer. */
type Decision =
  | { ok: true; key: KeyRecord; account: AccountRecord | null; keyAccount: AccountRecord | null }
  | { ok: false; refused: Refused; key?: KeyRecord }
  | { ok: false; temporary: Temporary; key?: KeyRecord };

/**
 * The one login path of every surface (IMAP, POP3, SMTP, nginx auth_http,
 * the HTTP API): `logIn(attempt)` checks the key's shape and checksum (no
 * store hit for garbage), applies the failure limits, looks the key up by its
 * SHA-256, asks the policy, audits and counts the attempt, answers every
 * refusal the failure delay after the attempt began, and, for a mail login
 * with a connection, opens the protocol's backend and registers the live
 * session. Nothing else may decide a login. Last use and audit never hold up
 * the reply.
 */
export class Authenticator {
  readonly store: KeyStore;
  private readonly logger: Logger;
  private readonly failureDelayMs: number;
  private readonly metrics: Metrics | undefined;
  private readonly limiter: LoginLimiter | null;
  private readonly sessions: SessionRegistry | undefined;
  private readonly backends: Backends;
  private readonly onAttempt: ((record: AttemptRecord) => void) | undefined;

  constructor(deps: AuthenticatorDeps) {
    this.store = deps.store;
    this.logger = deps.logger;
    this.failureDelayMs = deps.failureDelayMs;
    this.metrics = deps.metrics;
    this.limiter = deps.limiter ?? null;
    this.sessions = deps.sessions;
    this.backends = deps.backends ?? NO_BACKENDS;
    this.onAttempt = deps.onAttempt;
  }

  /** A mail login; never throws. */
  logIn<P extends Protocol>(attempt: MailAttempt<P>): Promise<LoginOutcome<MailLoggedIn<P>>>;
  /** An HTTP request's key; never throws. */
  logIn(attempt: ApiAttempt): Promise<LoginOutcome<ApiLoggedIn>>;
  async logIn(attempt: LoginAttempt): Promise<LoginOutcome<MailLoggedIn | ApiLoggedIn>> {
    const started = performance.now();
    let decision: Decision;
    try {
      decision = attempt.refused !== undefined ? { ok: false, refused: { kind: 'refused', reason: attempt.refused } } : await this.decide(attempt);
    } catch (err) {
      // A bug, not an unreachable store (that one is a temporary decision): logged without the key.
      this.logger.error({ err, protocol: attempt.protocol, ip: attempt.ip, account: 'username' in attempt ? normalizeAddress(attempt.username) : null }, 'login check failed');
      decision = { ok: false, temporary: { kind: 'temporary', reason: 'check_failed' } };
    }
    this.record(attempt, decision, performance.now() - started);
    if (!decision.ok) {
      // A refusal that took an extra lookup (a valid key under another account's name) takes no longer than one that did not.
      await sleep(Math.max(0, this.failureDelayMs - (performance.now() - started)));
      return 'refused' in decision ? decision.refused : decision.temporary;
    }
    if (attempt.protocol === 'http') return { kind: 'loggedIn', key: decision.key, keyAccount: decision.keyAccount };
    return this.openSession(attempt, decision.key, decision.account!);
  }

  private async decide(attempt: LoginAttempt): Promise<Decision> {
    const key = attempt.key.trim();
    // One shape check and one SHA-256 per attempt: the limiter keys on the same hash the store is searched by.
    const keyHash = isWellFormedKey(key) ? hashKey(key) : null;
    const username = attempt.protocol === 'http' ? null : normalizeAddress(attempt.username);
    const limitKey: LimitKey = { ip: attempt.ip, account: username ?? '', keyHash: keyHash ?? 'malformed' };
    if (this.limiter && !(await this.limiter.allow(limitKey))) {
      this.metrics?.rateLimited.inc({ surface: attempt.protocol });
      return temporary('rate_limited');
    }
    const decision = await this.lookUp(attempt, keyHash, username);
    if (decision.ok) void this.limiter?.recordSuccess?.(limitKey);
    else if ('refused' in decision) await this.limiter?.recordFailure(limitKey);
    return decision;
  }

  /** The store and the policy: who the key is, and whether it may do what the attempt asks. */
  private async lookUp(attempt: LoginAttempt, keyHash: string | null, username: string | null): Promise<Decision> {
    if (keyHash === null) return refused('malformed');
    let key: KeyRecord | null = null;
    let keyAccount: AccountRecord | null = null;
    let account: AccountRecord | null = null;
    try {
      key = await this.store.findByHash(keyHash);
      if (!key) return refused('unknown_key');
      if (key.account !== null) keyAccount = await this.store.getAccount(key.account);
      if (username !== null) {
        // The key's own account (or an alias of it) needs no second lookup.
        account = key.account !== null && (keyAccount?.address === username || keyAccount?.aliases.includes(username)) ? keyAccount : await this.store.resolveAccount(username);
      }
    } catch (err) {
      if (err instanceof StoreUnavailableError) return temporary('store_unavailable', key);
      throw err;
    }

    let action: Action;
    if (attempt.protocol === 'http') {
      try {
        action = attempt.action(key);
      } catch (cause) {
        return { ok: false, refused: { kind: 'refused', reason: 'no_action', cause }, key };
      }
    } else {
      if (!account) return refused('unknown_account', key);
      action = { kind: 'login', protocol: attempt.protocol, account: account.address };
    }
    const now = new Date();
    // Unbound keys are decided against the account they log in to; bound ones against their own.
    const decision = decide(key, action, { ip: attempt.ip, now, account: key.account === null && account ? account : keyAccount });
    if (!decision.allowed) {
      const denied: Refused = { kind: 'refused', reason: decision.reason, ...(decision.missingScope && { missingScope: decision.missingScope }) };
      return { ok: false, refused: denied, key };
    }
    this.store.touchKey(key.id, { at: now.toISOString(), ip: attempt.ip, protocol: attempt.protocol });
    return { ok: true, key, account, keyAccount };
  }

  /** The backend's side of a mail login and its live-session entry; synchronous when there is no backend to wait for. */
  private openSession<P extends Protocol>(attempt: MailAttempt<P>, key: KeyRecord, account: AccountRecord): LoginOutcome<MailLoggedIn<P>> | Promise<LoginOutcome<MailLoggedIn<P>>> {
    const { protocol, session } = attempt;
    if (!session) return { kind: 'loggedIn', key, account, session: null };
    const opener = this.backends[protocol] as Backends[P];
    if (!opener) return this.register(attempt, session, key, account, null);
    return opener.open({ protocol, account, key, clientIp: attempt.ip, clientPort: session.clientPort, secure: session.secure }).then(
      (backend) => this.register(attempt, session, key, account, backend as BackendSessions[P]),
      (err: unknown): Temporary => {
        this.logger.warn({ protocol, ip: attempt.ip, account: account.address, err: (err as Error).message }, `${protocol.toUpperCase()} backend unavailable`);
        return { kind: 'temporary', reason: 'backend_unavailable' };
      },
    );
  }

  /** Registers the live session, unless the client went away while its key was checked or its upstream opened. */
  private register<P extends Protocol>(
    attempt: MailAttempt<P>,
    session: SessionHandle,
    key: KeyRecord,
    account: AccountRecord,
    backend: BackendSessions[P] | null,
  ): LoginOutcome<MailLoggedIn<P>> {
    if (session.closed) {
      backend?.close();
      return { kind: 'temporary', reason: 'closed' };
    }
    const unregister = this.sessions?.add({ protocol: attempt.protocol, keyId: key.id, account: account.address, expiresAt: key.expiresAt, end: (reason) => session.end(reason) });
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      unregister?.();
      backend?.close();
    };
    return { kind: 'loggedIn', key, account, session: { backend, release } };
  }

  /** The one hook point every attempt passes: one structured audit line, the metrics, then `onAttempt`. */
  private record(attempt: LoginAttempt, decision: Decision, decideMs: number): void {
    const result = decision.ok ? 'success' : 'refused' in decision ? 'failure' : 'temporary_failure';
    const record: AttemptRecord = {
      at: Date.now(),
      protocol: attempt.protocol,
      ip: attempt.ip,
      // A mail attempt names its account (the resolved one on success, as asked otherwise); an HTTP one has the key's.
      account: attempt.protocol !== 'http' ? (decision.ok ? decision.account!.address : normalizeAddress(attempt.username)) : (decision.key?.account ?? null),
      keyId: decision.key?.id ?? null,
      result,
      reason: decision.ok ? null : 'refused' in decision ? decision.refused.reason : decision.temporary.reason,
      client: attempt.client ?? null,
    };
    this.metrics?.authDuration.observe({ protocol: attempt.protocol }, decideMs / 1000);
    this.metrics?.authAttempts.inc({ protocol: attempt.protocol, result });
    // HTTP successes are in the request log already; every other attempt gets its audit line. The reason is for operators only.
    if (!(decision.ok && attempt.protocol === 'http')) {
      const { protocol, ip, account, keyId, reason, client } = record;
      this.logger.info({ audit: true, protocol, ip, account, keyId: keyId ?? undefined, result: decision.ok ? 'success' : 'failure', reason, client: client ?? undefined }, 'auth attempt');
    }
    this.onAttempt?.(record);
  }
}

function refused(reason: FailReason, key?: KeyRecord): Decision {
  return { ok: false, refused: { kind: 'refused', reason }, ...(key && { key }) };
}

function temporary(reason: TemporaryReason, key?: KeyRecord | null): Decision {
  return { ok: false, temporary: { kind: 'temporary', reason }, ...(key && { key }) };
}
