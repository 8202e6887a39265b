import { connect, type Socket } from 'node:net';

/**
 * A line client for a unix socket (the local mailbox's IMAP, POP3 and LMTP)
 * or a TCP port: send a line, read lines until one matches.
 */
export class SocketClient {
  private buffer = '';
  private waiter: (() => void) | null = null;
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer += d.toString('latin1');
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => {});
  }

  static open(where: string | { host: string; port: number }): Promise<SocketClient> {
    return new Promise((resolve, reject) => {
      const s = connect(typeof where === 'string' ? { path: where } : where);
      s.once('connect', () => resolve(new SocketClient(s)));
      s.once('error', reject);
    });
  }

  /** Lines up to and including the first that matches `until` (rejects after `ms` or when the socket closes first). */
  async read(until: RegExp, ms = 10_000): Promise<string[]> {
    const deadline = Date.now() + ms;
    for (;;) {
      const lines = this.buffer.split('\r\n');
      const i = lines.slice(0, -1).findIndex((l) => until.test(l));
      if (i >= 0) {
        this.buffer = lines.slice(i + 1).join('\r\n');
        return lines.slice(0, i + 1);
      }
      if (this.closed) throw new Error(`closed before ${until}: ${JSON.stringify(this.buffer)}`);
      if (Date.now() > deadline) throw new Error(`no ${until} within ${ms} ms: ${JSON.stringify(this.buffer)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiter = () => {
          clearTimeout(t);
          this.waiter = null;
          resolve();
        };
      });
    }
  }

  send(line: string): void {
    this.socket.write(`${line}\r\n`);
  }

  /** Sends a line and reads through the reply that matches. */
  async exchange(line: string, until: RegExp): Promise<string[]> {
    this.send(line);
    return this.read(until);
  }

  close(): void {
    this.socket.destroy();
  }
}
