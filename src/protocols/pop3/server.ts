import { protocolLimits } from '../limits.js';
import type { ListenerDeps, RunningListener } from '../deps.js';
import { listenerLimits, TcpListener } from '../tcp-listener.js';
import { Pop3Connection, type Pop3Context } from './connection.js';
import { REPLY } from './replies.js';

/**
 * Starts the POP3 listeners from `config.pop3`: STLS on `port` and implicit
 * TLS on `securePort`. Both bind before this resolves; if either cannot, the
 * other is closed again and the error is thrown. Returns [] when disabled.
 */
export async function startPop3Listeners(deps: ListenerDeps): Promise<RunningListener[]> {
  const cfg = deps.config.pop3;
  if (!cfg.enabled) return [];
  const ctx: Pop3Context = { deps, limits: protocolLimits(deps.config), log: deps.logger.child({ protocol: 'pop3' }) };
  const specs = [
    { name: 'pop3', port: cfg.port, implicitTls: false },
    { name: 'pop3s', port: cfg.securePort, implicitTls: true },
  ];
  const started: RunningListener[] = [];
  try {
    for (const spec of specs) {
      const listener = new TcpListener({
        ...spec,
        protocol: 'pop3',
        host: cfg.host,
        tls: deps.tls,
        proxyProtocol: deps.config.proxyProtocol,
        ...listenerLimits(deps.config),
        metrics: deps.metrics,
        logger: deps.logger,
        onConnection: (conn) => new Pop3Connection(ctx, conn).start(),
        refuse: () => `${REPLY.tooManyConnections}\r\n`,
      });
      await listener.listen();
      started.push({ name: spec.name, address: () => listener.address(), close: (graceMs) => listener.close(graceMs) });
    }
  } catch (err) {
    await Promise.all(started.map((l) => l.close(0)));
    throw err;
  }
  return started;
}
