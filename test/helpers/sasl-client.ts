import net from 'node:net';

/**
 * A transcript client for the Dovecot authentication protocol (what Postfix
 * and Exim speak to the SASL server): LF-terminated, TAB-separated lines,
 * written exactly as a test says them. Every wait is bounded and says what
 * was unread when it gives up.
 */
export class SaslClient {
  private received = '';
  private waiters: Array<() => void> = [];
  isClosed = false;

  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.received += text;
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.isClosed = true;
      this.wake();
    });
  }

  /** Connects to 127.0.0.1:port, or to a unix socket path. */
  static connect(where: number | string): Promise<SaslClient> {
    return new Promise((resolve, reject) => {
      const s = typeof where === 'number' ? net.connect({ host: '127.0.0.1', port: where }) : net.connect({ path: where });
      s.once('connect', () => resolve(new SaslClient(s)));
      s.once('error', reject);
    });
  }

  /** Connects and does the client's half of the handshake (VERSION, CPID); returns the server's handshake lines up to DONE. */
  static async handshaken(where: number | string): Promise<{ client: SaslClient; handshake: string[] }> {
    const client = await SaslClient.connect(where);
    client.write('VERSION\t1\t2\nCPID\t4242\n');
    const handshake: string[] = [];
    for (let l = await client.line(); ; l = await client.line()) {
      handshake.push(l);
      if (l === 'DONE') break;
    }
    return { client, handshake };
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  write(text: string): void {
    this.socket.write(text);
  }

  /** The next line, without its LF. */
  async line(timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.received.indexOf('\n');
      if (i >= 0) {
        const line = this.received.slice(0, i);
        this.received = this.received.slice(i + 1);
        return line;
      }
      if (this.isClosed) throw new Error(`connection closed while waiting for a line; unread: ${JSON.stringify(this.received)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for a line; unread: ${JSON.stringify(this.received)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Sends one request line (fields joined with TAB) and returns the server's next line, split on TAB. */
  async send(...fields: string[]): Promise<string[]> {
    this.write(`${fields.join('\t')}\n`);
    return (await this.line()).split('\t');
  }

  /** Resolves with what was unread once the server has closed the connection; rejects after `timeoutMs`. */
  async closedWith(timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!this.isClosed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`still open; unread: ${JSON.stringify(this.received)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    const rest = this.received;
    this.received = '';
    return rest;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64');
