import net from 'node:net';
import tls from 'node:tls';

/**
 * A byte-level IMAP client for edge cases: writes exactly what a test says and
 * collects what the server sends, line by line, so a test can assert on the
 * wire. Works over plain TCP, implicit TLS, and upgrades in place (STARTTLS).
 */
export class RawClient {
  private received = '';
  private waiters: Array<() => void> = [];
  /** Resolves when the server closed the connection. */
  readonly closed: Promise<void>;
  private socket: net.Socket;
  private resolveClosed!: () => void;
  isClosed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.attach(socket);
  }

  private attach(socket: net.Socket): void {
    socket.setEncoding('latin1');
    socket.on('data', (text: string) => {
      this.received += text;
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.isClosed = true;
      this.resolveClosed();
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  /** Connects to 127.0.0.1:port; `prefix` is written first (e.g. a PROXY header). */
  static async connect(port: number, options: { tls?: boolean; prefix?: string | Buffer } = {}): Promise<RawClient> {
    const plain = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
      s.once('error', reject);
    });
    plain.setNoDelay(true);
    // A PROXY header goes first, before any TLS handshake.
    if (options.prefix !== undefined) plain.write(options.prefix);
    const socket = !options.tls
      ? plain
      : await new Promise<net.Socket>((resolve, reject) => {
          const s = tls.connect({ socket: plain, rejectUnauthorized: false, servername: 'localhost' }, () => resolve(s));
          s.once('error', reject);
        });
    return new RawClient(socket);
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Waits until `test` finds what it wants in the unread text; consumes up to the match end. */
  private async waitFor<T>(test: (text: string) => { value: T; end: number } | null, timeoutMs: number, what: string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = test(this.received);
      if (hit) {
        this.received = this.received.slice(hit.end);
        return hit.value;
      }
      if (this.isClosed) throw new Error(`connection closed while waiting for ${what}; unread: ${JSON.stringify(this.received)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; unread: ${JSON.stringify(this.received)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The next line, without CRLF. */
  line(timeoutMs = 5000): Promise<string> {
    return this.waitFor(
      (text) => {
        const i = text.indexOf('\r\n');
        return i < 0 ? null : { value: text.slice(0, i), end: i + 2 };
      },
      timeoutMs,
      'a line',
    );
  }

  /** Every line up to and including the one tagged `tag`. */
  response(tag: string, timeoutMs = 5000): Promise<string[]> {
    return this.waitFor(
      (text) => {
        const lines: string[] = [];
        let pos = 0;
        for (;;) {
          const i = text.indexOf('\r\n', pos);
          if (i < 0) return null;
          const line = text.slice(pos, i);
          lines.push(line);
          pos = i + 2;
          if (line.startsWith(`${tag} `)) return { value: lines, end: pos };
        }
      },
      timeoutMs,
      `the reply tagged ${tag}`,
    );
  }

  /** Sends `tag command` and returns the tagged line (untagged lines before it are dropped). */
  async command(tag: string, command: string, timeoutMs = 5000): Promise<string> {
    this.write(`${tag} ${command}\r\n`);
    const lines = await this.response(tag, timeoutMs);
    return lines.at(-1)!;
  }

  /** Everything the server sends until it closes. */
  async rest(timeoutMs = 5000): Promise<string> {
    await Promise.race([this.closed, new Promise((_, reject) => setTimeout(() => reject(new Error(`still open; unread: ${JSON.stringify(this.received)}`)), timeoutMs))]);
    const text = this.received;
    this.received = '';
    return text;
  }

  /** Client side of STARTTLS, after the server's tagged OK. */
  async upgrade(): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const secure = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: plain, rejectUnauthorized: false, servername: 'localhost' }, () => resolve(s));
      s.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
  }

  /** Unread text (for asserting that nothing more came). */
  unread(): string {
    return this.received;
  }

  destroy(): void {
    this.socket.destroy();
  }

  end(): void {
    this.socket.end();
  }
}
