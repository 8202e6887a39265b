import type { Protocol } from '../keys/scopes.js';
import type { ListenerDeps, RunningListener } from './deps.js';
import { listenerLimits, TcpListener, type Connection } from './tcp-listener.js';

/** What one listener of a pair does with its connections. */
export interface ListenerHandler {
  accept(conn: Connection): void;
  /** Shutdown has begun (the listener no longer accepts): e.g. tell idle sessions goodbye now. */
  closing?(): void;
  /** The listener has closed. */
  closed?(): void;
}

export interface PairSpec {
  protocol: Protocol;
  /** The line a client over its per-IP connection limit gets (with CRLF), before the close. */
  tooManyConnections: string;
  /** Builds the handler of one listener: STARTTLS (`implicitTls` false) or implicit TLS. */
  handler(implicitTls: boolean): ListenerHandler;
}

/**
 * Starts a protocol's two listeners from `config.<protocol>`: STARTTLS on
 * `port` (named after the protocol) and implicit TLS on `securePort` (the
 * name plus `s`), each a TcpListener with the shared PROXY, per-IP limit,
 * TLS and metrics wiring. Both bind before this resolves; if either cannot,
 * the other is closed again and the error is thrown. Returns [] when the
 * protocol is disabled.
 */
export async function startListenerPair(deps: ListenerDeps, spec: PairSpec): Promise<RunningListener[]> {
  const { config } = deps;
  const section = config[spec.protocol];
  if (!section.enabled) return [];
  const started: RunningListener[] = [];
  try {
    for (const implicitTls of [false, true]) {
      const name = implicitTls ? `${spec.protocol}s` : spec.protocol;
      const handler = spec.handler(implicitTls);
      const listener = new TcpListener({
        name,
        protocol: spec.protocol,
        host: section.host,
        port: implicitTls ? section.securePort : section.port,
        implicitTls,
        tls: deps.tls,
        proxyProtocol: config.proxyProtocol,
        ...listenerLimits(config),
        logger: deps.logger,
        ...(deps.metrics && { metrics: deps.metrics }),
        refuse: () => spec.tooManyConnections,
        onConnection: (conn) => handler.accept(conn),
      });
      try {
        await listener.listen();
      } catch (err) {
        handler.closed?.();
        throw err;
      }
      started.push({
        name,
        address: () => listener.address(),
        async close(graceMs) {
          const closed = listener.close(graceMs);
          handler.closing?.();
          await closed;
          handler.closed?.();
        },
      });
    }
  } catch (err) {
    await Promise.all(started.map((l) => l.close(0)));
    throw err;
  }
  return started;
}
