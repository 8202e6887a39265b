import type { Logger } from '../log.js';

/**
 * The protocol trace (`log.level=trace`): what each client sends before its
 * session is handed to an upstream, one log line per command or SASL
 * response, on IMAP, POP3, SMTP and the Dovecot-protocol SASL server alike.
 *
 * Secrets are masked by where they stand, never by what they look like (a
 * password, a base64 SASL blob or an atom are all just words): everything
 * after a command that carries a secret is masked, keeping only a SASL
 * mechanism name (and the Dovecot protocol's request id), and a SASL
 * response line is never shown at all.
 */
export type TracedProtocol = 'imap' | 'pop3' | 'smtp' | 'sasl';

const LABEL: Record<TracedProtocol, string> = { imap: 'IMAP', pop3: 'POP3', smtp: 'SMTP', sasl: 'SASL' };

/**
 * Commands whose arguments carry a secret: IMAP LOGIN and AUTHENTICATE,
 * POP3 PASS, APOP and AUTH, SMTP AUTH, the Dovecot protocol's AUTH and CONT.
 * Found wherever they stand in the line (a missing or extra tag moves them).
 */
const CARRIES_SECRET = new Set(['LOGIN', 'AUTHENTICATE', 'AUTH', 'PASS', 'APOP', 'CONT']);
/** Of these, the ones whose first argument may be a mechanism name worth showing. */
const TAKES_MECHANISM = new Set(['AUTHENTICATE', 'AUTH']);
/** SASL mechanism names shown as they are; any other word in their place may be a secret sent out of order. */
const MECHANISM_NAMES = new Set(['PLAIN', 'LOGIN', 'XOAUTH2', 'OAUTHBEARER', 'CRAM-MD5', 'DIGEST-MD5', 'SCRAM-SHA-1', 'SCRAM-SHA-256', 'EXTERNAL', 'ANONYMOUS', 'GSSAPI', 'NTLM']);

export const MASK = '[REDACTED]';
/** A traced command is cut here: an IMAP command with literals can be long, and the trace is for reading. */
const MAX_TRACED = 512;

/** A client's command line as the trace shows it: as sent, or with everything after a secret-carrying command masked. */
export function maskCommand(protocol: TracedProtocol, line: string): string {
  const words = line.trim().split(/\s+/);
  const at = words.findIndex((w) => CARRIES_SECRET.has(w.toUpperCase()));
  if (at < 0) return line.length > MAX_TRACED ? `${line.slice(0, MAX_TRACED)}…` : line;
  let shown = at + 1;
  // The Dovecot protocol numbers its requests: `AUTH <id> <mechanism> …`, `CONT <id> <response>`.
  if (protocol === 'sasl' && /^\d{1,10}$/.test(words[shown] ?? '')) shown++;
  if (TAKES_MECHANISM.has(words[at]!.toUpperCase()) && MECHANISM_NAMES.has((words[shown] ?? '').toUpperCase())) shown++;
  const kept = words.slice(0, shown).join(' ');
  return shown < words.length ? `${kept} ${MASK}` : kept;
}

/** Traces one command line a client sent (masked as above). */
export function traceCommand(logger: Logger, protocol: TracedProtocol, ip: string, line: Buffer | string): void {
  if (!logger.isLevelEnabled('trace')) return;
  logger.trace({ ip, command: maskCommand(protocol, typeof line === 'string' ? line : line.toString('utf8')) }, `${LABEL[protocol]} command`);
}

/** Traces that a client sent one SASL response line (a continuation): that it came, never what it said. */
export function traceSaslResponse(logger: Logger, protocol: TracedProtocol, ip: string): void {
  if (!logger.isLevelEnabled('trace')) return;
  logger.trace({ ip, response: MASK }, `${LABEL[protocol]} SASL response`);
}
