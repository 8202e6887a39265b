import type { ListenerDeps, RunningListener } from '../deps.js';
import { protocolLimits } from '../limits.js';
import { listenerLimits, TcpListener } from '../tcp-listener.js';
import { REPLY } from './replies.js';
import { SmtpSubmission, type SmtpContext } from './submission.js';

/**
 * Starts the SMTP submission listeners from `config.smtp`: STARTTLS on `port`
 * and implicit TLS on `securePort`. Both bind before this resolves; if either
 * cannot, the other is closed again and the error is thrown. Returns [] when
 * disabled.
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
export async function startSmtpListeners(deps: ListenerDeps): Promise<RunningListener[]> {
  const cfg = deps.config.smtp;
  if (!cfg.enabled) return [];
  const ctx: SmtpContext = { deps, limits: protocolLimits(deps.config), log: deps.logger.child({ protocol: 'smtp' }) };
  const specs = [
    { name: 'smtp', port: cfg.port, implicitTls: false },
    { name: 'smtps', port: cfg.securePort, implicitTls: true },
  ];
  const started: RunningListener[] = [];
  try {
    for (const spec of specs) {
      const submission = new SmtpSubmission(ctx, spec.implicitTls);
      const unsubscribe = deps.tls.onChange(() => submission.useCurrentCertificate());
      const listener = new TcpListener({
        ...spec,
        protocol: 'smtp',
        host: cfg.host,
        tls: deps.tls,
        proxyProtocol: deps.config.proxyProtocol,
        ...listenerLimits(deps.config),
        metrics: deps.metrics,
        logger: deps.logger,
        onConnection: (conn) => submission.accept(conn),
        refuse: () => `${REPLY.tooManyConnections.join(' ')}\r\n`,
      });
      const close = async (graceMs: number): Promise<void> => {
        unsubscribe();
        await listener.close(graceMs);
      };
      try {
        await listener.listen();
      } catch (err) {
        unsubscribe();
        throw err;
      }
      started.push({ name: spec.name, address: () => listener.address(), close });
    }
  } catch (err) {
    await Promise.all(started.map((l) => l.close(0)));
    throw err;
  }
  return started;
}
