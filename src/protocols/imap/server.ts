import type { ListenerDeps, RunningListener } from '../deps.js';
import { protocolLimits } from '../limits.js';
import { listenerLimits, TcpListener } from '../tcp-listener.js';
import { ImapConnection, type ImapListenerContext } from './connection.js';
import { REPLY } from './responses.js';

/**
 * One IMAP listener (STARTTLS or implicit TLS). Closing: stop accepting; idle
 * connections get `* BYE` at once, one in the middle of a command after it;
 * sessions piped to a backend run on for the grace period, then get `* BYE`
 * (the TcpListener's shutdown hook) and are cut.
 */
async function startOne(deps: ListenerDeps, shared: Omit<ImapListenerContext, 'open'>, name: string, port: number, implicitTls: boolean): Promise<RunningListener> {
  const open = new Set<ImapConnection>();
  const context: ImapListenerContext = { ...shared, open };
  const listener = new TcpListener({
    name,
    protocol: 'imap',
    host: deps.config.imap.host,
    port,
    implicitTls,
    tls: deps.tls,
    proxyProtocol: deps.config.proxyProtocol,
    ...listenerLimits(deps.config),
    metrics: deps.metrics,
    logger: deps.logger,
    refuse: () => REPLY.byeTooManyConnections,
    onConnection(conn) {
      new ImapConnection(context, conn).start();
    },
  });
  await listener.listen();
  return {
    name,
    address: () => listener.address(),
    close(graceMs) {
      const closed = listener.close(graceMs);
      for (const c of open) c.drain();
      return closed;
    },
  };
}

/** Starts the IMAP listeners: STARTTLS on imap.port and implicit TLS on imap.securePort (none when imap.enabled is false). */
export async function startImapListeners(deps: ListenerDeps): Promise<RunningListener[]> {
  if (!deps.config.imap.enabled) return [];
  const context: Omit<ImapListenerContext, 'open'> = {
    authenticator: deps.authenticator,
    limits: protocolLimits(deps.config),
    logger: deps.logger.child({ protocol: 'imap' }),
    sessions: deps.sessions,
    backends: deps.backends,
    tls: deps.tls,
    allowPlaintext: deps.config.auth.allowPlaintext,
  };
  const started: RunningListener[] = [];
  try {
    started.push(await startOne(deps, context, 'imap', deps.config.imap.port, false));
    started.push(await startOne(deps, context, 'imaps', deps.config.imap.securePort, true));
  } catch (err) {
    await Promise.all(started.map((l) => l.close(0)));
    throw err;
  }
  return started;
}
