import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Authenticator } from '../auth/authenticate.js';
import type { KeyRecord } from '../keys/record.js';
import type { Metrics } from '../metrics.js';

/**
 * Adapter: console sign-in attempts go through the same gate as mail logins —
 * the Authenticator's login limiter (per IP and per account + presented
 * secret), its audit line, its metrics, and the failure delay counted from the
 * start of the attempt. When the login path becomes one `logIn(attempt)`, only
 * this file changes.
 */
export interface SignInAttempt {
  /** `console-key`, `console-password`, `console-link`, `console-oidc`: the audit line's protocol. */
  method: 'key' | 'password' | 'link' | 'oidc';
  ip: string;
  /** The account named (address as typed, lowercased), or '' when the attempt names none. */
  account: string;
  /** What was presented, only to tell repeats apart in the limits; hashed here, never kept. */
  secret: string;
}

export type SignInVerdict<T> = { ok: true; value: T } | { ok: false; temporary: boolean };

/** What a check says about an attempt: the value on success, else the reason for the audit log. */
export type CheckResult<T> = { ok: true; value: T; account?: string; keyId?: string } | { ok: false; reason: string; temporary?: boolean; keyId?: string };

export class SignInGuard {
  constructor(
    private readonly authenticator: Authenticator,
    private readonly failureDelayMs: number,
    private readonly metrics?: Metrics,
  ) {}

  /**
   * Runs `check` unless the limits refuse the attempt first; audits it; answers
   * any failure `failureDelayMs` after the attempt began, whatever the reason.
   */
  async attempt<T>(attempt: SignInAttempt, check: () => Promise<CheckResult<T>>): Promise<SignInVerdict<T>> {
    const started = performance.now();
    const protocol = `console-${attempt.method}`;
    const limitKey = { ip: attempt.ip, account: attempt.account, keyHash: createHash('sha256').update(protocol).update('\0').update(attempt.secret).digest('hex') };
    const limiter = this.authenticator.limiter;
    const reservation = limiter ? await limiter.reserve(limitKey) : null;
    let result: CheckResult<T>;
    if (limiter && !reservation) {
      this.metrics?.rateLimited.inc({ surface: protocol });
      result = { ok: false, reason: 'rate_limited', temporary: true };
    } else {
      try {
        result = await check();
      } catch (err) {
        result = { ok: false, reason: `check_failed: ${(err as Error).name}`, temporary: true };
      }
      void reservation?.settle(result.ok ? 'success' : result.temporary ? 'undecided' : 'failure');
    }
    const account = result.ok ? (result.account ?? attempt.account) : attempt.account;
    // audit() reads the key id of a success from `key`.
    const audited = result.ok ? { ok: true, key: { id: result.keyId } as KeyRecord } : { ok: false, reason: result.reason, ...(result.keyId && { keyId: result.keyId }) };
    this.authenticator.audit(protocol, attempt.ip, account || null, audited);
    this.metrics?.authAttempts.inc({ protocol: 'console', result: result.ok ? 'success' : result.temporary ? 'temporary_failure' : 'failure' });
    if (result.ok) return { ok: true, value: result.value };
    await sleep(Math.max(0, this.failureDelayMs - (performance.now() - started)));
    return { ok: false, temporary: result.temporary ?? false };
  }
}
