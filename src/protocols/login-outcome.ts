import { setTimeout as sleep } from 'node:timers/promises';
import type { Authenticator, LoginResult } from '../auth/authenticate.js';
import type { AccountRecord, KeyRecord } from '../keys/record.js';
import { normalizeAddress } from '../keys/record.js';
import type { Protocol } from '../keys/scopes.js';
import type { Logger } from '../log.js';

/**
 * How a mail login ended, as every listener answers it. Each protocol maps
 * the three kinds to its own texts and nothing else:
 *
 * - `ok`: hand the session over;
 * - `refused`: the one refusal text (wrong key, unknown user, authzid
 *   mismatch, malformed key — whatever the reason, which is in the audit log);
 * - `temporary`: the temporary-failure text (rate limited, store unreachable,
 *   or the check itself failed).
 *
 * `refused` and `temporary` are only returned after the failure delay.
 */
export type LoginOutcome =
  | { kind: 'ok'; key: KeyRecord; account: AccountRecord }
  | { kind: 'refused' }
  | { kind: 'temporary' };

/** What the outcome functions need from a listener. */
export interface LoginOutcomeDeps {
  authenticator: Authenticator;
  logger: Logger;
  /** `auth.failureDelay`: the pause before every refused or temporary answer, ms. */
  failureDelayMs: number;
}

/** One login attempt as a listener received it. */
export interface LoginAttempt {
  protocol: Protocol;
  username: string;
  secret: string;
  ip: string;
}

/**
 * Checks a username and key with the Authenticator (which audits the
 * attempt, one line, and applies the login limits) and maps the result to an
 * outcome. When the check itself throws (a store bug, not an unreachable store
 * — that one comes back as a temporary result), the error is logged at error
 * level, without the secret, and the outcome is `temporary`. Any outcome
 * other than `ok` is answered the failure delay after the attempt began.
 * Never throws.
 */
export async function checkLogin(deps: LoginOutcomeDeps, attempt: LoginAttempt): Promise<LoginOutcome> {
  const { protocol, username, secret, ip } = attempt;
  const started = performance.now();
  let result: LoginResult;
  try {
    result = await deps.authenticator.login({ protocol, username, secret, ip });
  } catch (err) {
    deps.logger.error({ err, protocol, ip, account: normalizeAddress(username) }, 'login check failed');
    return failed(deps, started, { kind: 'temporary' });
  }
  if (result.ok) return { kind: 'ok', key: result.key, account: result.account };
  return failed(deps, started, { kind: result.temporary ? 'temporary' : 'refused' });
}

/**
 * Refuses a login the protocol layer has already decided against without
 * asking the key store (a SASL authorization identity naming someone else):
 * audited through the Authenticator like any other failure, with `reason`,
 * delayed like any other failure, and answered with the same refusal.
 */
export async function refuseLogin(deps: LoginOutcomeDeps, attempt: Omit<LoginAttempt, 'secret'>, reason: string): Promise<LoginOutcome> {
  const started = performance.now();
  deps.authenticator.audit(attempt.protocol, attempt.ip, normalizeAddress(attempt.username), { ok: false, reason });
  return failed(deps, started, { kind: 'refused' });
}

/**
 * Answers a failure `failureDelayMs` after the attempt began, not after the
 * check ended: a refusal that took an extra lookup (a valid key under another
 * account's name) then takes no longer than one that did not.
 */
async function failed(deps: LoginOutcomeDeps, started: number, outcome: LoginOutcome): Promise<LoginOutcome> {
  await sleep(Math.max(0, deps.failureDelayMs - (performance.now() - started)));
  return outcome;
}
