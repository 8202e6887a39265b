import net from 'node:net';

/** One client connection through the proxy. */
export interface ProxiedConnection {
  /** The first bytes the client sent (up to 4 KiB), as text: enough to see e.g. `CLIENT SETNAME`. */
  readonly opening: string;
  /** Drops everything the server sends from now on, keeping both sockets open: a one-way network split. */
  blackhole(): void;
  /** Closes both sides, as a split that finally times out does. */
  cut(): void;
  readonly closed: boolean;
}

/** A TCP relay on a loopback port in front of `target`, whose connections the test can split or cut one by one. */
export interface TcpProxy {
  port: number;
  connections(): ProxiedConnection[];
  stop(): Promise<void>;
}

const OPENING_BYTES = 4096;

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const conns = new Set<ProxiedConnection>();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    let opening = '';
    let dropping = false;
    let closed = false;
    const conn: ProxiedConnection = {
      get opening() {
        return opening;
      },
      get closed() {
        return closed;
      },
      blackhole() {
        dropping = true;
      },
      cut() {
        client.destroy();
        upstream.destroy();
      },
    };
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => conn.cut());
      s.on('close', () => {
        sockets.delete(s);
        closed = true;
        conn.cut();
        conns.delete(conn);
      });
    }
    client.on('data', (b: Buffer) => {
      if (opening.length < OPENING_BYTES) opening += b.toString('latin1').slice(0, OPENING_BYTES - opening.length);
      upstream.write(b);
    });
    upstream.on('data', (b: Buffer) => {
      if (!dropping) client.write(b);
    });
    conns.add(conn);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => [...conns],
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
