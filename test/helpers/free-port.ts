import { connect, createServer } from 'node:net';

const handedOut = new Set<number>();

/**
 * A loopback port the kernel says is free now (bind 0, read, close), never
 * the same twice in one process, for servers that must be told their port
 * (child processes, Dovecot, redis-server). Servers started in-process listen
 * on port 0 instead.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
        const { port: p } = srv.address() as { port: number };
        srv.close(() => resolve(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

/** True when something accepts connections on 127.0.0.1:port now (a child server has opened its port). */
export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
