import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { isLoopback } from '../../keys/cidr.js';
import type { ListenerDeps, RunningListener } from '../deps.js';
import { SaslServerConnection, type SaslServerContext } from './connection.js';

/** The unix socket's mode: owner and group only (add the MTA's user to the group): whoever can connect can check keys and name any client address. */
const SOCKET_MODE = 0o660;

/**
 * Starts the Dovecot-protocol SASL server from `config.saslServer`: TCP on
 * `host:port` when `port` is set, a unix socket at `socket` when that is set,
 * neither by default. Both bind before this resolves; if one cannot, the
 * other is closed again and the error is thrown.
 */
export async function startSaslServer(deps: ListenerDeps): Promise<RunningListener[]> {
  const { config, logger } = deps;
  const { host, port, socket } = config.saslServer;
  if (port === 0 && socket === '') return [];
  const log = logger.child({ component: 'sasl-server' });
  let cuid = 0;
  // Each Postfix smtpd process (at most default_process_limit, 100 by default) or Exim child holds one connection;
  // past limits.connectionsPerListener new ones are closed at accept (Node's maxConnections). No per-IP cap: the peers are the MTA's processes.
  const maxConnections = config.limits.connectionsPerListener;
  const ctx: SaslServerContext = {
    authenticator: deps.authenticator,
    log,
    lineLength: config.limits.lineLength,
    handshakeTimeoutMs: config.limits.loginTimeout,
    allowPlaintext: config.auth.allowPlaintext,
    nextCuid: () => ++cuid,
  };
  const started: RunningListener[] = [];
  try {
    if (port !== 0) {
      // The protocol is cleartext and trusts the peer's word on the client address (rip): loopback is the place for it.
      if (!isLoopback(host)) log.warn({ host }, 'SASL server listening beyond loopback: anyone who reaches it can check keys and name any client address');
      started.push(await listen(ctx, 'sasl', { host, port }, maxConnections));
    }
    if (socket !== '') {
      await removeStaleSocket(socket);
      const listener = await listen(ctx, 'sasl-socket', { path: socket }, maxConnections);
      started.push(listener);
      chmodSync(socket, SOCKET_MODE);
    }
  } catch (err) {
    await Promise.all(started.map((l) => l.close(0)));
    throw err;
  }
  return started;
}

async function listen(ctx: SaslServerContext, name: string, where: { host: string; port: number } | { path: string }, maxConnections: number): Promise<RunningListener> {
  const connections = new Set<SaslServerConnection>();
  const server = net.createServer((socket) => {
    const conn = new SaslServerConnection(ctx, socket);
    connections.add(conn);
    socket.once('close', () => connections.delete(conn));
  });
  if (maxConnections > 0) server.maxConnections = maxConnections;
  server.on('error', (err) => ctx.log.error({ err, listener: name }, 'SASL listener error'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(where, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = (): { host: string; port: number } => {
    const a = server.address();
    return a !== null && typeof a === 'object' ? { host: a.address, port: a.port } : { host: typeof a === 'string' ? a : '', port: 0 };
  };
  ctx.log.info({ listener: name, ...('path' in where ? { path: where.path } : address()) }, 'listening');
  let closing: Promise<void> | null = null;
  return {
    name,
    address,
    close(graceMs) {
      closing ??= (async () => {
        const closed = new Promise<void>((r) => server.close(() => r()));
        // Idle connections (Postfix keeps one per smtpd process) go now; those with a request under way get the grace period.
        const deadline = Date.now() + graceMs;
        for (;;) {
          for (const c of connections) if (c.pending === 0) c.destroy();
          if (connections.size === 0 || Date.now() >= deadline) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        for (const c of connections) c.destroy();
        await closed;
        ctx.log.info({ listener: name }, 'closed');
      })();
      return closing;
    },
  };
}

/**
 * A socket file left by an earlier run that nobody listens on any more
 * (connecting is refused) is removed; anything else at that path (a live
 * socket, a regular file) is left alone, and binding fails with EADDRINUSE.
 */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    if (!lstatSync(path).isSocket()) return;
  } catch {
    return;
  }
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (err: Error & { code?: string }) => resolve(err.code !== 'ECONNREFUSED'));
  });
  if (!live) unlinkSync(path);
}
