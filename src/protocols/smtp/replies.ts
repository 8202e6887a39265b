import { END_REASON_TEXT, type EndReason } from '../../auth/sessions.js';

/**
 * Every SMTP reply Keygate itself decides, with its RFC 3463 enhanced status
 * code in the text. smtp-server's automatic enhanced codes stay off
 * (`hideENHANCEDSTATUSCODES`, its default): it maps a reply code to one fixed
 * enhanced code (553 → 5.1.3, 421 → 4.4.2), which is wrong for ours.
 */
export const REPLY = {
  authFailed: [535, '5.7.8 Authentication credentials invalid'],
  authTemporary: [454, '4.7.0 Temporary authentication failure, try again later'],
  authRequired: [530, '5.7.0 Authentication required'],
  tlsRequired: [530, '5.7.0 Must issue a STARTTLS command first'],
  senderNotOwned: [553, '5.7.1 Sender address not owned by the authenticated account'],
  noBackend: [451, '4.3.0 No mail backend is configured, message not accepted'],
  backendUnavailable: [451, '4.4.1 Upstream unavailable, try again later'],
  internal: [451, '4.3.0 Local error in processing, try again later'],
  loginTimeout: [421, '4.4.2 Login timeout, closing connection'],
  tooManyConnections: [421, '4.7.0 Too many connections from your address, try again later'],
} as const satisfies Record<string, readonly [number, string]>;

export type Reply = readonly [number, string];

/** An error smtp-server turns into the reply it carries (`responseCode` + message). */
export class SmtpReplyError extends Error {
  readonly responseCode: number;
  constructor([code, text]: Reply) {
    super(text);
    this.name = 'SmtpReplyError';
    this.responseCode = code;
  }
}

/** What a session ended from outside is told before the connection closes (421 closes in smtp-server). */
export function sessionEnded(reason: EndReason): Reply {
  return [421, reason === 'shutdown' ? '4.3.2 Server shutting down' : `4.7.0 Session ended: ${END_REASON_TEXT[reason]}`];
}
