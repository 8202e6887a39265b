import { END_REASON_TEXT, type EndReason } from '../../auth/sessions.js';

/**
 * Every POP3 reply Keygate sends, in one place, with its RFC 2449 / RFC 3206
 * response code. Lines are without CRLF; the connection adds it.
 */
export const REPLY = {
  greeting: '+OK Keygate ready',
  bye: '+OK Bye',
  userAccepted: '+OK Send your key with PASS',
  loggedIn: '+OK Logged in',
  noop: '+OK',
  capaHead: '+OK Capability list follows',
  saslList: '+OK Supported mechanisms follow',
  stls: '+OK Begin TLS negotiation',
  /** SASL continuation with an empty challenge (RFC 5034). */
  saslContinue: '+ ',

  /** The one answer to every refused credential, whatever the reason (the reason goes to the audit log). */
  authFailed: '-ERR [AUTH] Authentication failed',
  /** Rate-limited, or the key store could not be asked. */
  authTemporary: '-ERR [SYS/TEMP] Authentication temporarily unavailable, try again later',
  tlsRequired: '-ERR [SYS/PERM] TLS required: use STLS before logging in',
  noBackend: '-ERR [SYS/PERM] No mailbox backend is configured',
  /** The key is good, but no upstream is configured for its account: the login is refused, not half-done. */
  noMailbox: '-ERR [SYS/PERM] No mailbox is configured for this account',
  backendUnavailable: '-ERR [SYS/TEMP] Mailbox temporarily unavailable, try again later',
  tooManyConnections: '-ERR [SYS/TEMP] Too many connections from your address, try again later',

  unknownCommand: '-ERR Unknown command',
  wrongState: '-ERR Command not valid in this state',
  alreadySecure: '-ERR Already using TLS',
  userFirst: '-ERR Send USER first',
  missingUser: '-ERR Missing user name',
  missingPass: '-ERR Missing password',
  badMechanism: '-ERR Unsupported authentication mechanism',
  badSasl: '-ERR Malformed SASL response',
  saslCancelled: '-ERR Authentication cancelled',

  lineTooLong: '-ERR Line too long, closing connection',
  tooManyCommands: '-ERR Too many commands before login, closing connection',
  tooManyErrors: '-ERR Too many errors, closing connection',
  loginTimeout: '-ERR Login timeout, closing connection',
  internal: '-ERR [SYS/TEMP] Internal error, closing connection',
} as const;

/** What a live session is told when it is ended from outside (revocation, expiry, shutdown). */
export function sessionEnded(reason: EndReason): string {
  return `-ERR [SYS/TEMP] Session ended: ${END_REASON_TEXT[reason]}`;
}
