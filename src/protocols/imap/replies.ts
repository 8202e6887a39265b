import type { EndReason } from '../../auth/sessions.js';
import type { FatalReason } from '../line-session.js';

/**
 * Every fixed IMAP reply Keygate sends, in one catalogue: the tagged ones are
 * the text after the tag, the untagged ones whole lines with CRLF. Every
 * credential refusal uses `authFailed`, whatever the reason (the reason goes
 * to the audit log only).
 */
export const REPLY = {
  greeting: (caps: string) => `* OK [CAPABILITY ${caps}] Keygate ready\r\n`,

  // Tagged results.
  authFailed: 'NO [AUTHENTICATIONFAILED] Authentication failed',
  authTemporary: 'NO [UNAVAILABLE] Temporary authentication failure, try again later',
  backendUnavailable: 'NO [UNAVAILABLE] Mailbox backend unavailable, try again later',
  noBackend: 'NO [UNAVAILABLE] No mailbox backend is configured',
  /** The key is good, but no upstream is configured for its account: the login is refused, not half-done. */
  noMailbox: 'NO [UNAVAILABLE] No mailbox is configured for this account',
  privacyRequired: 'NO [PRIVACYREQUIRED] Use STARTTLS before logging in',
  unknownMechanism: 'NO [CANNOT] Unsupported authentication mechanism',
  cancelled: 'BAD Authentication cancelled',
  badBase64: 'BAD Invalid base64 data',
  badSaslPlain: 'BAD Invalid SASL PLAIN message',
  badSasl: 'BAD Invalid SASL message',
  tlsActive: 'BAD TLS is already active',
  loginFirst: 'BAD Command not valid before login',
  alreadyAuthenticated: 'BAD Already logged in',
  unknownCommand: 'BAD Unknown command',
  literalTooLarge: 'BAD Literal too large',
  commandTooLong: 'BAD Command too long',
  internal: 'NO [SERVERBUG] Internal server error',

  // Untagged lines.
  continueLiteral: '+ Ready for literal data\r\n',
  byeLogout: '* BYE Logging out\r\n',
  byeAutologout: '* BYE Autologout; idle for too long\r\n',
  byeTooManyCommands: '* BYE Too many commands before login\r\n',
  byeTooManyErrors: '* BYE Too many protocol errors\r\n',
  byeTooManyConnections: '* BYE Too many connections from your address\r\n',
} as const;

/** Fatal framing errors: the stream cannot be resynchronised. */
export const FATAL_BYE: Record<FatalReason, string> = {
  line_too_long: '* BYE Line too long\r\n',
  literal_too_large: '* BYE Literal too large\r\n',
  command_too_long: '* BYE Command too long\r\n',
};

/** Why a live session was ended, as the client reads it. */
export const END_BYE: Record<EndReason, string> = {
  revoked: '* BYE Session revoked\r\n',
  expired: '* BYE Session expired\r\n',
  account_disabled: '* BYE Account disabled\r\n',
  shutdown: '* BYE Server shutting down\r\n',
};
