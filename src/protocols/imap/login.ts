import { checkLogin, refuseLogin as refuse, type LoginOutcome, type LoginOutcomeDeps } from '../login-outcome.js';
import type { ImapSession } from './command.js';
import { REPLY } from './responses.js';

function outcomeDeps(session: ImapSession): LoginOutcomeDeps {
  const { authenticator, logger, limits } = session.context;
  return { authenticator, logger, failureDelayMs: limits.failureDelayMs };
}

/** IMAP's texts for a login outcome: the session takes over an `ok`; `NO [AUTHENTICATIONFAILED]` or `NO [UNAVAILABLE]` otherwise. */
function answer(session: ImapSession, tag: string, outcome: LoginOutcome): Promise<void> | void {
  if (outcome.kind === 'ok') return session.authenticated(tag, outcome);
  session.send(`${tag} ${outcome.kind === 'temporary' ? REPLY.tempFail : REPLY.authFailed}\r\n`);
}

/**
 * The one login path behind LOGIN and both AUTHENTICATE mechanisms: the
 * shared check (audit, limits, failure delay, a failing check answered as
 * temporary), then IMAP's answer. Never throws for a failed check.
 */
export async function passwordLogin(session: ImapSession, tag: string, username: string, secret: string): Promise<void> {
  return answer(session, tag, await checkLogin(outcomeDeps(session), { protocol: 'imap', username, secret, ip: session.remoteAddress }));
}

/**
 * Refuses a login the protocol layer can already tell is wrong (a SASL
 * authorization identity other than the user): audited and delayed like any
 * other failure, and answered with the same text.
 */
export async function refuseLogin(session: ImapSession, tag: string, username: string, reason: string): Promise<void> {
  return answer(session, tag, await refuse(outcomeDeps(session), { protocol: 'imap', username, ip: session.remoteAddress }, reason));
}
