import { END_REASON_TEXT, type EndReason } from '../../auth/sessions.js';

/**
 * Every SMTP reply of the submission listeners (one line each, without CRLF),
 * with its RFC 3463 enhanced status code where the code says something a
 * client acts on. The bare `250 OK` / `250 Accepted` / `235` texts are the
 * ones clients and tests have seen from Keygate since its first release.
 */
export const REPLY = {
  greeting: (host: string) => `220 ${host} ESMTP Keygate`,
  ehloGreeting: (host: string, client: string) => `${host} Hello ${client}`,
  helo: (host: string, client: string) => `250 ${host} Hello ${client}`,
  ok: '250 OK',
  accepted: '250 Accepted',
  reset: '250 2.0.0 Flushed',
  bye: '221 2.0.0 Bye',
  help: '214 2.0.0 See RFC 5321 and RFC 4954',
  vrfy: '252 2.1.5 Cannot VRFY user, but will accept message and attempt delivery',
  startData: '354 End data with <CR><LF>.<CR><LF>',
  startTls: '220 2.0.0 Ready to start TLS',
  authContinue: '334 ',
  authOk: '235 2.7.0 Authentication successful',
  authFailed: '535 5.7.8 Authentication credentials invalid',
  authTemporary: '454 4.7.0 Temporary authentication failure, try again later',
  authRequired: '530 5.7.0 Authentication required',
  tlsRequired: '530 5.7.0 Must issue a STARTTLS command first',
  authAborted: '501 5.7.0 Authentication aborted',
  badSasl: '501 5.5.2 Invalid SASL response',
  badMechanism: '504 5.5.4 Unrecognized authentication type',
  authSyntax: '501 5.5.4 Syntax: AUTH mechanism [initial-response]',
  alreadyAuthenticated: '503 5.5.1 Already authenticated',
  noTlsNow: '503 5.5.1 TLS is not available now',
  tlsSyntax: '501 5.5.4 Syntax: STARTTLS',
  ehloSyntax: '501 5.5.4 Syntax: EHLO hostname',
  heloSyntax: '501 5.5.4 Syntax: HELO hostname',
  sendEhloFirst: '503 5.5.1 Send EHLO or HELO first',
  mailSyntax: '501 5.5.4 Syntax: MAIL FROM:<address>',
  rcptSyntax: '501 5.5.4 Syntax: RCPT TO:<address>',
  badRecipient: '553 5.1.3 Recipient address invalid',
  badParameter: '555 5.5.4 Unsupported or malformed parameter',
  nestedMail: '503 5.5.1 Sender already specified',
  needMail: '503 5.5.1 Need MAIL command',
  needRcpt: '503 5.5.1 Need RCPT command',
  tooManyRecipients: '452 4.5.3 Too many recipients',
  sizeExceeded: '552 5.3.4 Message size exceeds fixed maximum message size',
  senderNotOwned: '553 5.7.1 Sender address not owned by the authenticated account',
  unknown: '500 5.5.2 Command unrecognized',
  syntax: '501 5.5.4 Syntax error in parameters',
  noBackend: '451 4.3.0 No mail backend is configured, message not accepted',
  backendUnavailable: '451 4.4.1 Upstream unavailable, try again later',
  internal: '451 4.3.0 Local error in processing, try again later',
  loginTimeout: '421 4.4.2 Login timeout, closing connection',
  idleTimeout: '421 4.4.2 Idle timeout, closing connection',
  lineTooLong: '421 4.5.0 Line too long, closing connection',
  tooManyCommands: '421 4.7.0 Too many unauthenticated commands, closing connection',
  tooManyErrors: '421 4.5.0 Too many errors, closing connection',
  synchronization: '554 5.5.0 SMTP protocol synchronization error: commands sent before the reply to the previous one',
  tooManyConnections: '421 4.7.0 Too many connections from your address, try again later',
} as const;

/** What a session ended from outside is told before the connection closes. */
export function sessionEnded(reason: EndReason): string {
  return reason === 'shutdown' ? '421 4.3.2 Server shutting down' : `421 4.7.0 Session ended: ${END_REASON_TEXT[reason]}`;
}
