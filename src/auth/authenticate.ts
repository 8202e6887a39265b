import { isWellFormedKey, hashKey } from '../keys/format.js';
import { decide, type Action, type DenyReason } from '../keys/policy.js';
import type { AccountRecord, KeyRecord } from '../keys/record.js';
import { normalizeAddress } from '../keys/record.js';
import type { Protocol } from '../keys/scopes.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { StoreUnavailableError } from '../store/errors.js';
import type { KeyStore } from '../store/types.js';

/** Why a presented key was refused; audit-log only, never shown to a client. */
export type FailReason = DenyReason | 'malformed' | 'unknown_key' | 'unknown_account' | 'rate_limited' | 'store_unavailable';

export type IdentifyResult =
  | { ok: true; key: KeyRecord; keyAccount: AccountRecord | null }
  | { ok: false; reason: 'malformed' | 'unknown_key' | 'store_unavailable' };

export type LoginResult =
  | { ok: true; key: KeyRecord; account: AccountRecord }
  | { ok: false; reason: FailReason; keyId?: string; temporary: boolean };

export interface LoginRequest {
  protocol: Protocol;
  username: string;
  secret: string;
  ip: string;
}

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

/**
 * The one authenticate path every surface uses: shape and checksum first (no
 * store hit for garbage), one SHA-256, one indexed lookup, then the policy.
 * Last use and audit never hold up the reply.
 */
export class Authenticator {
  limiter: LoginLimiter | null = null;

  constructor(
    readonly store: KeyStore,
    private readonly logger: Logger,
    private readonly metrics?: Metrics,
  ) {}

  /** Finds the key a secret belongs to, without deciding anything about what it may do. */
  async identify(secret: string): Promise<IdentifyResult> {
    const candidate = secret.trim();
    return isWellFormedKey(candidate) ? this.identifyHash(hashKey(candidate)) : { ok: false, reason: 'malformed' };
  }

  /** `identify` for a key whose shape was checked and hash taken already. */
  private async identifyHash(hash: string): Promise<IdentifyResult> {
    try {
      const key = await this.store.findByHash(hash);
      if (!key) return { ok: false, reason: 'unknown_key' };
      const keyAccount = key.account === null ? null : await this.store.getAccount(key.account);
      return { ok: true, key, keyAccount };
    } catch (err) {
      if (err instanceof StoreUnavailableError) return { ok: false, reason: 'store_unavailable' };
      throw err;
    }
  }

  /** Decides an already identified key against an action. */
  authorize(id: Extract<IdentifyResult, { ok: true }>, action: Action, ip: string, now = new Date()) {
    return decide(id.key, action, { ip, now, account: id.keyAccount });
  }

  /** A protocol login: username is the account address or an alias, password the key. */
  async login(req: LoginRequest): Promise<LoginResult> {
    const started = process.hrtime.bigint();
    const username = normalizeAddress(req.username);
    const result = await this.loginInner(req, username);
    this.metrics?.authDuration.observe({ protocol: req.protocol }, Number(process.hrtime.bigint() - started) / 1e9);
    this.metrics?.authAttempts.inc({ protocol: req.protocol, result: result.ok ? 'success' : result.temporary ? 'temporary_failure' : 'failure' });
    this.audit(req.protocol, req.ip, result.ok ? result.account.address : username, result);
    return result;
  }

  private async loginInner(req: LoginRequest, username: string): Promise<LoginResult> {
    const secret = req.secret.trim();
    // One shape check and one SHA-256 per login: the limiter keys on the same hash the store is searched by.
    // A malformed secret is hashed too, so each distinct one counts (and repeats of one are recognised).
    const keyHash = isWellFormedKey(secret) ? hashKey(secret) : null;
    const reservation = this.limiter ? await this.limiter.reserve({ ip: req.ip, account: username, keyHash: keyHash ?? hashKey(secret) }) : null;
    if (this.limiter && !reservation) {
      this.metrics?.rateLimited.inc({ surface: req.protocol });
      return { ok: false, reason: 'rate_limited', temporary: true };
    }
    let result: LoginResult;
    try {
      result = await this.check(req, username, keyHash);
    } catch (err) {
      void reservation?.settle('undecided');
      throw err;
    }
    void reservation?.settle(result.ok ? 'success' : result.temporary ? 'undecided' : 'failure');
    return result;
  }

  /** The store lookup and the policy, once the limits let the attempt through. */
  private async check(req: LoginRequest, username: string, keyHash: string | null): Promise<LoginResult> {
    const fail = (reason: FailReason, keyId?: string): LoginResult =>
      keyId ? { ok: false, reason, keyId, temporary: false } : { ok: false, reason, temporary: false };

    const id: IdentifyResult = keyHash === null ? { ok: false, reason: 'malformed' } : await this.identifyHash(keyHash);
    if (!id.ok) {
      if (id.reason === 'store_unavailable') return { ok: false, reason: id.reason, temporary: true };
      return fail(id.reason);
    }
    let account: AccountRecord | null;
    try {
      account = id.key.account !== null && (id.keyAccount?.address === username || id.keyAccount?.aliases.includes(username))
        ? id.keyAccount
        : await this.store.resolveAccount(username);
    } catch (err) {
      if (err instanceof StoreUnavailableError) return { ok: false, reason: 'store_unavailable', keyId: id.key.id, temporary: true };
      throw err;
    }
    if (!account) return fail('unknown_account', id.key.id);
    const now = new Date();
    const decision = decide(id.key, { kind: 'login', protocol: req.protocol, account: account.address }, {
      ip: req.ip,
      now,
      account: id.key.account === null ? account : id.keyAccount,
    });
    if (!decision.allowed) return fail(decision.reason, id.key.id);
    this.store.touchKey(id.key.id, { at: now.toISOString(), ip: req.ip, protocol: req.protocol });
    return { ok: true, key: id.key, account };
  }

  /** One structured audit line per attempt; the reason is for operators only. */
  audit(protocol: string, ip: string, account: string | null, result: LoginResult | { ok: boolean; reason?: string; keyId?: string; key?: KeyRecord }): void {
    const keyId = result.ok ? (result as { key: KeyRecord }).key.id : (result as { keyId?: string }).keyId;
    this.logger.info(
      { audit: true, protocol, ip, account, keyId, result: result.ok ? 'success' : 'failure', reason: result.ok ? null : (result as { reason: string }).reason },
      'auth attempt',
    );
  }
}
