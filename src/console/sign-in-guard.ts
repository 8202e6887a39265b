import type { Authenticator, CheckResult, ConsoleMethod } from '../auth/authenticate.js';

/**
 * Adapter: console sign-ins the console checks itself (mailbox password,
 * one-time link, OpenID Connect) go through the Authenticator's one login
 * path, so they meet the same limits (per IP and per account + what was
 * presented), audit line (`console-<method>`), metrics and failure delay as
 * mail logins. (A key sign-in goes to `logIn` with the key itself.)
 */
export interface SignInAttempt {
  method: Exclude<ConsoleMethod, 'key'>;
  ip: string;
  /** The account named (address as typed, lowercased), or '' when the attempt names none. */
  account: string;
  /** What was presented, only to tell repeats apart in the limits; hashed, never kept. */
  secret: string;
}

export type SignInVerdict<T> = { ok: true; value: T } | { ok: false; temporary: boolean };

export class SignInGuard {
  constructor(private readonly authenticator: Authenticator) {}

  /** Runs `check` unless the limits refuse the attempt first; any failure is answered the failure delay after the attempt began. */
  async attempt<T>(attempt: SignInAttempt, check: () => Promise<CheckResult<T>>): Promise<SignInVerdict<T>> {
    const outcome = await this.authenticator.logIn({ protocol: 'console', method: attempt.method, ip: attempt.ip, account: attempt.account, presented: attempt.secret, check });
    return outcome.kind === 'loggedIn' ? { ok: true, value: outcome.value } : { ok: false, temporary: outcome.kind === 'temporary' };
  }
}
