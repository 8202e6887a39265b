import net from 'node:net';
import tls from 'node:tls';

/**
 * The one transcript client for the line protocols (IMAP, POP3, SMTP):
 * writes exactly what a test says and reads what the server sends, line by
 * line, so a test asserts on the wire. Plain TCP, implicit TLS, or upgraded
 * in place (STARTTLS / STLS). Text is read as latin1, so byte counts stay
 * exact. Every wait is bounded and says what was unread when it gives up.
 */
export class LineClient {
  private received = '';
  private waiters: Array<() => void> = [];
  private resolveClosed!: () => void;
  /** Every data event's text, to check that a reply came in one write. */
  readonly chunks: string[] = [];
  /** Resolves when the server closed the connection. */
  readonly closed: Promise<void>;
  isClosed = false;

  private constructor(public socket: net.Socket | tls.TLSSocket) {
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.attach(socket);
  }

  /** Connects to 127.0.0.1:port; `prefix` is written first, before any TLS handshake (a PROXY header). */
  static async connect(port: number, options: { tls?: boolean; prefix?: string | Buffer; servername?: string } = {}): Promise<LineClient> {
    const plain = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
      s.once('error', reject);
    });
    plain.setNoDelay(true);
    if (options.prefix !== undefined) plain.write(options.prefix);
    return new LineClient(options.tls ? await handshake(plain, options.servername ?? 'localhost') : plain);
  }

  private attach(socket: net.Socket | tls.TLSSocket): void {
    socket.setEncoding('latin1');
    socket.on('data', (text: string) => {
      this.chunks.push(text);
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

  /** Writes one command line and returns the first reply line. */
  async send(command: string, timeoutMs = 5000): Promise<string> {
    this.write(`${command}\r\n`);
    return this.line(timeoutMs);
  }

  /** IMAP: every line up to and including the one tagged `tag`. */
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

  /** IMAP: sends `tag command` and returns the tagged line (untagged lines before it are dropped). */
  async command(tag: string, command: string, timeoutMs = 5000): Promise<string> {
    this.write(`${tag} ${command}\r\n`);
    return (await this.response(tag, timeoutMs)).at(-1)!;
  }

  /** POP3: the lines of a multi-line reply up to its terminating "." (status line first; an -ERR ends it at once). */
  async multiline(timeoutMs = 5000): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const l = await this.line(timeoutMs);
      lines.push(l);
      if (l === '.' || (lines.length === 1 && l.startsWith('-ERR'))) return lines;
    }
  }

  /** SMTP: one (possibly multi-line) reply. */
  async reply(timeoutMs = 5000): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const l = await this.line(timeoutMs);
      lines.push(l);
      if (l.length < 4 || l[3] === ' ') return lines;
    }
  }

  /** Everything the server sends until it closes. */
  async rest(timeoutMs = 5000): Promise<string> {
    await this.waitClosed(timeoutMs);
    const text = this.received;
    this.received = '';
    return text;
  }

  /** Resolves once the server has closed the connection; rejects after `timeoutMs`. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.closed,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`still open; unread: ${JSON.stringify(this.received)}`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Client side of STARTTLS / STLS, after the server said go. An empty servername sends no SNI. */
  async upgrade(servername = 'localhost'): Promise<void> {
    const plain = this.socket as net.Socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    this.socket = await handshake(plain, servername);
    this.attach(this.socket);
  }

  /** Whole lines received but not yet read. */
  pending(): string[] {
    const lines = this.received.split('\r\n');
    lines.pop();
    return lines;
  }

  /** Unread text (for asserting that nothing more came). */
  unread(): string {
    return this.received;
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function handshake(plain: net.Socket, servername: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ socket: plain, rejectUnauthorized: false, servername }, () => resolve(s));
    s.once('error', reject);
  });
}

/** SASL PLAIN initial response. */
export function plain(user: string, key: string, authzid = ''): string {
  return Buffer.from(`${authzid}\0${user}\0${key}`).toString('base64');
}

/** A PROXY v1 header claiming the connection comes from `ip`. */
export function proxyV1(ip: string, port = 40000): string {
  return `PROXY TCP4 ${ip} 127.0.0.1 ${port} 143\r\n`;
}
