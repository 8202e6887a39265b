import { SendingLimits } from '../../limits/sending.js';
import type { ListenerDeps, RunningListener } from '../deps.js';
import { startLineListeners } from '../line-session.js';
import { REPLY } from './replies.js';
import { SmtpSession, type SmtpSettings } from './session.js';

/**
 * Starts the SMTP submission listeners from `config.smtp`: STARTTLS on `port`
 * and implicit TLS on `securePort` (none when smtp.enabled is false), on the
 * same TcpListener and line-session base as IMAP and POP3 (PROXY v1/v2,
 * per-IP limits, TLS, graceful shutdown).
 */
export function startSmtpListeners(deps: ListenerDeps): Promise<RunningListener[]> {
  const settings: SmtpSettings = {
    hostname: deps.config.hostname,
    messageSize: deps.config.limits.messageSize,
    limits: new SendingLimits(deps.authenticator.store),
  };
  return startLineListeners(deps, 'smtp', `${REPLY.tooManyConnections}\r\n`, (context, conn) => new SmtpSession(context, conn, settings));
}
