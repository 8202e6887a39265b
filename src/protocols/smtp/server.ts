import type { ListenerDeps, RunningListener } from '../deps.js';
import { protocolLimits } from '../limits.js';
import { startListenerPair } from '../listener-pair.js';
import { REPLY } from './replies.js';
import { SmtpSubmission, type SmtpContext } from './submission.js';

/**
 * Starts the SMTP submission listeners from `config.smtp`: STARTTLS on `port`
 * and implicit TLS on `securePort` (none when smtp.enabled is false).
 *
 * Why smtp-server gets its sockets from our TcpListener (`server.connect()`)
 * instead of listening itself with `useProxy`: smtp-server's PROXY support
 * speaks only v1, and the issue wants v1 and v2 on every mail listener; the
 * TcpListener also gives SMTP the same per-IP connection limit, implicit-TLS
 * handshake (from the TlsProvider, TLS 1.2 minimum) and graceful shutdown as
 * IMAP and POP3, in one place. The cost is one seam: smtp-server's STARTTLS
 * strips the plain socket's listeners, so SmtpSubmission releases the
 * connection explicitly when the session closes.
 */
export function startSmtpListeners(deps: ListenerDeps): Promise<RunningListener[]> {
  const ctx: SmtpContext = { deps, limits: protocolLimits(deps.config), log: deps.logger.child({ protocol: 'smtp' }) };
  return startListenerPair(deps, {
    protocol: 'smtp',
    tooManyConnections: `${REPLY.tooManyConnections.join(' ')}\r\n`,
    handler(implicitTls) {
      const submission = new SmtpSubmission(ctx, implicitTls);
      const unsubscribe = deps.tls.onChange(() => submission.useCurrentCertificate());
      return { accept: (conn) => submission.accept(conn), closed: unsubscribe };
    },
  });
}
