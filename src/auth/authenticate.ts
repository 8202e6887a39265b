import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { NO_BACKENDS, NoBackendError, type BackendSessions, type Backends } from '../backends/types.js';
import { hashKey, isWellFormedKey } from '../keys/format.js';
import { decide, type Action } from '../keys/policy.js';
import type { AccountRecord, KeyRecord } from '../keys/record.js';
import { normalizeAddress } from '../keys/record.js';
import type { Protocol } from '../keys/scopes.js';
import { auditLog, type AuditLog, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { NO_EVENTS, type KeyEvents } from '../events/types.js';
import { StoreUnavailableError } from '../store/errors.js';
import type { KeyStore } from '../store/types.js';
import {
  LoginRefusal,
  type ApiAttempt,
  type ApiLoggedIn,
  type AttemptRecord,
  type CheckedAttempt,
  type CheckedOutcome,
  type CheckResult,
  type LoginAttempt,
  type LoginOutcome,
  type MailAttempt,
  type MailLoggedIn,
  type OpenSession,
  type Refused,
  type SessionHandle,
  type Temporary,
} from './attempt.js';
import { CanaryAlarm } from './canary.js';
import type { EndReason, LiveSession, SessionRegistry } from './sessions.js';

export * from './attempt.js';

/** What a login attempt is counted by: the client IP, the username and the SHA-256 of the presented secret (well-formed or not). */
export interface LoginLimitKey {
  ip: string;
  account: string;
  keyHash: string;
}

/** The login limits (src/auth/limits.ts), asked before the store is. */
export interface LoginLimiter {
  /**
   * Takes the attempt out of its budgets before any store lookup, atomically,
   * so a burst cannot all pass a check that counts none of it yet. null: over
   * a limit — refuse with a temporary failure, without a lookup.
   */
  reserve(req: LoginLimitKey): Promise<LoginReservation | null>;
}

export interface LoginReservation {
  /** Ends the attempt: a success and an undecided attempt (store unreachable) give back what `reserve` took; a failure keeps it. Never throws. */
  settle(outcome: 'success' | 'failure' | 'undecided'): Promise<void>;
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
  /** Where key events (a canary used, a new network) are raised; default none. */
  events?: KeyEvents;
}

/** An attempt as decided, before the surface's answer. */
type Decision =
  | { ok: true; key: KeyRecord | null; account: AccountRecord | null; keyAccount: AccountRecord | null; checked?: { value: unknown; account: string | null } }
  | { ok: false; outcome: Refused<string> | Temporary<string>; key?: KeyRecord | null };

/** An identified principal whose own login is behind it (a console session), asking to act. */
export interface SessionRequest {
  key: KeyRecord;
  keyAccount: AccountRecord | null;
  ip: string;
  /** As `ApiAttempt.action`. */
  action(key: KeyRecord): Action;
}

/**
 * The one login path of every surface (IMAP, POP3, SMTP, nginx auth_http,
 * the HTTP API, the console's sign-in): `logIn(attempt)` checks the key's
 * shape and checksum (no store hit for garbage), applies the failure limits,
 * looks the key up by its SHA-256, asks the policy, audits and counts the
 * attempt, answers every refusal the failure delay after the attempt began,
 * and, for a mail login with a connection, opens the protocol's backend and
 * registers the live session. Nothing else may decide a login. Last use and
 * audit never hold up the reply.
 */
export class Authenticator {
  readonly store: KeyStore;
  /** Raises key and login events; never blocks. */
  readonly events: KeyEvents;
  private readonly logger: Logger;
  /** One line per attempt, on the login's hot path (src/log.ts). */
  private readonly audit: AuditLog;
  private readonly failureDelayMs: number;
  private readonly metrics: Metrics | undefined;
  private readonly limiter: LoginLimiter | null;
  private readonly sessions: SessionRegistry | undefined;
  private readonly backends: Backends;
  private readonly onAttempt: ((record: AttemptRecord) => void) | undefined;
  /** Sounds when a canary key is presented, on this path or another that meets one (token introspection). */
  readonly canary: CanaryAlarm;

  constructor(deps: AuthenticatorDeps) {
    this.store = deps.store;
    this.logger = deps.logger;
    this.audit = auditLog(deps.logger);
    this.failureDelayMs = deps.failureDelayMs;
    this.metrics = deps.metrics;
    this.limiter = deps.limiter ?? null;
    this.sessions = deps.sessions;
    this.backends = deps.backends ?? NO_BACKENDS;
    this.onAttempt = deps.onAttempt;
    this.events = deps.events ?? NO_EVENTS;
    this.canary = new CanaryAlarm(deps.logger, this.events, deps.metrics);
  }

  /** A mail login; never throws. */
  logIn<P extends Protocol>(attempt: MailAttempt<P>): Promise<LoginOutcome<MailLoggedIn<P>>>;
  /** An HTTP request's key, or a console sign-in with one; never throws. */
  logIn(attempt: ApiAttempt): Promise<LoginOutcome<ApiLoggedIn>>;
  /** A console sign-in the console checks itself, under the same limits, record and delay; never throws. */
  logIn<T>(attempt: CheckedAttempt<T>): Promise<CheckedOutcome<T>>;
  async logIn(attempt: LoginAttempt): Promise<LoginOutcome<MailLoggedIn | ApiLoggedIn> | CheckedOutcome<unknown>> {
    const started = performance.now();
    let decision: Decision;
    try {
      decision = 'refused' in attempt && attempt.refused !== undefined ? fail(refused(attempt.refused)) : await this.decide(attempt);
    } catch (err) {
      // A bug, not an unreachable store (that one is a temporary decision): logged without the key.
      this.logger.error({ err, protocol: attempt.protocol, ip: attempt.ip, account: 'username' in attempt ? normalizeAddress(attempt.username) : null }, 'login check failed');
      decision = fail(temporary('check_failed'));
    }
    this.record(attempt, decision, performance.now() - started);
    if (!decision.ok) {
      // A refusal that took an extra lookup (a valid key under another account's name) takes no longer than one that did not.
      await sleep(Math.max(0, this.failureDelayMs - (performance.now() - started)));
      return decision.outcome as Refused | Temporary;
    }
    if ('check' in attempt) return { kind: 'loggedIn', value: decision.checked!.value };
    if ('action' in attempt) return { kind: 'loggedIn', key: decision.key!, keyAccount: decision.keyAccount };
    return this.openSession(attempt, decision.key!, decision.account!);
  }

  /**
   * A request of a principal that signed in earlier (a console session): the
   * policy only, as for a key, with denials recorded; no limits, no delay
   * (nothing is presented that could be guessed).
   */
  authorize(request: SessionRequest): LoginOutcome<ApiLoggedIn> {
    const { key, keyAccount, ip } = request;
    let denied: Refused;
    try {
      const decision = decide(key, request.action(key), { ip, now: new Date(), account: keyAccount });
      if (decision.allowed) return { kind: 'loggedIn', key, keyAccount };
      denied = { kind: 'refused', reason: decision.reason, ...(decision.missingScope && { missingScope: decision.missingScope }) };
    } catch (cause) {
      denied = { kind: 'refused', reason: 'no_action', cause };
    }
    this.record({ protocol: 'http', key: '', ip, action: request.action }, fail(denied, key), 0);
    return denied;
  }

  private async decide(attempt: LoginAttempt): Promise<Decision> {
    let keyHash: string | null;
    let countedHash: string;
    let username: string | null = null;
    if ('check' in attempt) {
      // The console's own credentials are told apart in the limits by method and what was presented, never kept.
      keyHash = countedHash = createHash('sha256').update(`console-${attempt.method}`).update('\0').update(attempt.presented).digest('hex');
    } else {
      const key = attempt.key.trim();
      // One shape check and one SHA-256 per attempt: the limiter keys on the same hash the store is searched by.
      keyHash = isWellFormedKey(key) ? hashKey(key) : null;
      // A malformed key is hashed too, so each distinct one counts (and repeats of one are recognised).
      countedHash = keyHash ?? hashKey(key);
      if (!('action' in attempt)) username = normalizeAddress(attempt.username);
    }
    const account = 'check' in attempt ? attempt.account : (username ?? '');
    const reservation = this.limiter ? await this.limiter.reserve({ ip: attempt.ip, account, keyHash: countedHash }) : null;
    if (this.limiter && !reservation) {
      this.metrics?.rateLimited.inc({ surface: attempt.protocol });
      return fail(temporary('rate_limited'));
    }
    let decision: Decision;
    try {
      decision = 'check' in attempt ? await this.check(attempt) : await this.lookUp(attempt, keyHash, username);
    } catch (err) {
      void reservation?.settle('undecided');
      throw err;
    }
    // A failure keeps what the reservation took; a success or an undecided attempt (store unreachable) gives it back.
    void reservation?.settle(decision.ok ? 'success' : decision.outcome.kind === 'refused' ? 'failure' : 'undecided');
    return decision;
  }

  /** A checked attempt: the surface's own check, a throw counted as a temporary failure. */
  private async check(attempt: CheckedAttempt<unknown>): Promise<Decision> {
    let result: CheckResult<unknown>;
    try {
      result = await attempt.check();
    } catch (err) {
      result = { ok: false, reason: `check_failed: ${(err as Error).name}`, temporary: true };
    }
    const named = result.ok ? (result.account ?? attempt.account) : attempt.account;
    if (result.ok) return { ok: true, key: null, account: null, keyAccount: null, checked: { value: result.value, account: named || null } };
    return fail(result.temporary ? temporary(result.reason) : refused(result.reason));
  }

  /** The store and the policy: who the key is, and whether it may do what the attempt asks. */
  private async lookUp(attempt: MailAttempt | ApiAttempt, keyHash: string | null, username: string | null): Promise<Decision> {
    if (keyHash === null) return fail(refused('malformed'));
    let key: KeyRecord | null = null;
    let keyAccount: AccountRecord | null = null;
    let account: AccountRecord | null = null;
    try {
      key = await this.store.findByHash(keyHash);
      if (!key) return fail(refused('unknown_key'));
      // Refused like an unknown key (same answer, same delay: the caller's), whatever
      // username came with it, and before anything else is looked up.
      if (key.canary) {
        // Its last use shows in listings when it was tripped, and from where.
        this.store.touchKey(key.id, { at: new Date().toISOString(), ip: attempt.ip, protocol: attempt.protocol === 'console' ? 'http' : attempt.protocol });
        return fail(refused('canary'), key);
      }
      if (key.account !== null) keyAccount = await this.store.getAccount(key.account);
      if (username !== null) {
        // The key's own account (or an alias of it) needs no second lookup.
        account = key.account !== null && (keyAccount?.address === username || keyAccount?.aliases.includes(username)) ? keyAccount : await this.store.resolveAccount(username);
      }
    } catch (err) {
      if (err instanceof StoreUnavailableError) return fail(temporary('store_unavailable'), key);
      throw err;
    }

    let action: Action;
    if ('action' in attempt) {
      try {
        action = attempt.action(key);
      } catch (cause) {
        return fail(cause instanceof LoginRefusal ? refused(cause.reason) : { kind: 'refused', reason: 'no_action', cause }, key);
      }
    } else {
      if (!account) return fail(refused('unknown_account'), key);
      action = { kind: 'login', protocol: attempt.protocol, account: account.address };
    }
    const now = new Date();
    // Unbound keys are decided against the account they log in to; bound ones against their own.
    const decision = decide(key, action, { ip: attempt.ip, now, account: key.account === null && account ? account : keyAccount });
    if (!decision.allowed) return fail({ kind: 'refused', reason: decision.reason, ...(decision.missingScope && { missingScope: decision.missingScope }) }, key);
    this.store.touchKey(key.id, { at: now.toISOString(), ip: attempt.ip, protocol: attempt.protocol === 'console' ? 'http' : attempt.protocol });
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
        // The backend logged where and why; no route at all is the account's state, not a failure.
        if (err instanceof NoBackendError) return { kind: 'temporary', reason: 'no_backend' };
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
    const open = new OpenMailSession(attempt.protocol, key, account.address, backend, session);
    open.register(this.sessions);
    return { kind: 'loggedIn', key, account, session: open };
  }

  /**
   * The one hook point every attempt passes: one structured audit line, the
   * metrics, then `onAttempt`. An HTTP request with a good key is neither
   * audited nor counted here: the request log and keygate_http_requests_total
   * have it, and an API client would otherwise add a "login" per request.
   */
  private record(attempt: LoginAttempt, decision: Decision, decideMs: number): void {
    const result = decision.ok ? 'success' : decision.outcome.kind === 'refused' ? 'failure' : 'temporary_failure';
    const key = decision.key ?? null;
    const record: AttemptRecord = {
      at: Date.now(),
      protocol: attempt.protocol,
      method: 'method' in attempt ? (attempt.method ?? null) : null,
      ip: attempt.ip,
      account: recordedAccount(attempt, decision),
      keyId: key?.id ?? null,
      result,
      reason: decision.ok ? null : decision.outcome.reason,
      client: attempt.client ?? null,
    };
    this.onAttempt?.(record);
    if (!decision.ok && decision.outcome.reason === 'canary' && key) this.reportCanary(attempt, key);
    if (decision.ok && attempt.protocol === 'http') return;
    this.metrics?.authDuration.observe({ protocol: attempt.protocol }, decideMs / 1000);
    this.metrics?.authAttempts.inc({ protocol: attempt.protocol, result });
    const { ip, account, keyId, reason, client } = record;
    // The console's methods are told apart in the audit line (console-key, console-password, …); the reason is for operators only.
    const protocol = record.method ? `${record.protocol}-${record.method}` : record.protocol;
    this.audit({ protocol, ip, account, keyId: keyId ?? undefined, result: decision.ok ? 'success' : 'failure', reason, client: client ?? undefined });
  }

  /** Everything the attempt tells of the client that presented a canary; never the key. */
  private reportCanary(attempt: LoginAttempt, key: KeyRecord): void {
    const session = 'session' in attempt ? attempt.session : undefined;
    this.canary.report({
      protocol: attempt.protocol,
      method: 'method' in attempt ? (attempt.method ?? null) : null,
      ip: attempt.ip,
      port: session?.clientPort ?? null,
      secure: session?.secure ?? null,
      username: 'username' in attempt ? normalizeAddress(attempt.username).slice(0, 320) : null,
      keyId: key.id,
      keyName: key.name,
      keyAccount: key.account,
      client: attempt.client ?? null,
    });
  }
}

/**
 * A logged-in mail session as both the registry and its connection hold it:
 * one object with its methods on the prototype, since an idle connection
 * should cost as little as it can.
 */
class OpenMailSession<P extends Protocol> implements LiveSession, OpenSession<P> {
  readonly keyId: string;
  readonly expiresAt: string | null;
  private unregister: (() => void) | null = null;
  private released = false;

  constructor(
    readonly protocol: P,
    key: KeyRecord,
    readonly account: string,
    readonly backend: BackendSessions[P] | null,
    private readonly handle: SessionHandle,
  ) {
    this.keyId = key.id;
    this.expiresAt = key.expiresAt;
  }

  register(sessions: SessionRegistry | undefined): void {
    this.unregister = sessions?.add(this) ?? null;
  }

  end(reason: EndReason): void {
    this.handle.end(reason);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.unregister?.();
    this.backend?.close();
  }
}

/**
 * The account an attempt's record names: a mail login the one asked for (the
 * resolved one on success), an HTTP request or a console key its key's, a
 * checked console sign-in the one it named or found.
 */
function recordedAccount(attempt: LoginAttempt, decision: Decision): string | null {
  if ('check' in attempt) return decision.ok ? (decision.checked?.account ?? null) : attempt.account || null;
  if ('action' in attempt) return decision.key?.account ?? null;
  return decision.ok ? decision.account!.address : normalizeAddress(attempt.username);
}

function fail(outcome: Refused<string> | Temporary<string>, key?: KeyRecord | null): Decision {
  return { ok: false, outcome, ...(key && { key }) };
}

function refused<R extends string>(reason: R): Refused<R> {
  return { kind: 'refused', reason };
}

function temporary<R extends string>(reason: R): Temporary<R> {
  return { kind: 'temporary', reason };
}
