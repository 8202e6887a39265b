/**
 * Shared by the POP3 and SMTP listener tests (and the cross-protocol login
 * tests, which start IMAP on it too): a real SQLite store, the real
 * Authenticator and SessionRegistry, a real (self-signed) TlsProvider, config
 * through loadConfig with test flags, every log line captured, and a
 * line-oriented raw socket client.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { Authenticator } from '../../../src/auth/authenticate.js';
import { SessionRegistry } from '../../../src/auth/sessions.js';
import { NO_BACKENDS, type Backends } from '../../../src/backends/types.js';
import { loadConfig, type Config } from '../../../src/config.js';
import { createLogger, type Logger } from '../../../src/log.js';
import type { ListenerDeps, RunningListener } from '../../../src/protocols/deps.js';
import { issueKey } from '../../../src/services/keys.js';
import { openSqliteStore } from '../../../src/store/sqlite.js';
import type { KeyStore } from '../../../src/store/types.js';
import { createTlsProvider, type TlsProvider } from '../../../src/tls/index.js';

/** One captured log line, parsed (audit lines carry `audit: true`). */
export interface LogLine {
  level?: number;
  msg?: string;
  audit?: boolean;
  protocol?: string;
  ip?: string;
  account?: string | null;
  result?: string;
  reason?: string | null;
  [field: string]: unknown;
}

export interface Harness {
  dir: string;
  /** Every log line at info level and above, parsed. */
  logs: LogLine[];
  audits(): LogLine[];
  store: KeyStore;
  logger: Logger;
  tls: TlsProvider;
  authenticator: Authenticator;
  sessions: SessionRegistry;
  /** Listener deps for one set of config flags (on top of the test defaults). */
  deps(flags?: Record<string, unknown>, backends?: Backends): ListenerDeps;
  issue(account: string | null, scopes?: string[], extra?: { allowedIps?: string[]; expiresAt?: string }): Promise<{ key: string; id: string }>;
  close(): Promise<void>;
}

const BASE_FLAGS = {
  'auth.failureDelay': '10ms',
  'imap.host': '127.0.0.1',
  'imap.port': '0',
  'imap.securePort': '0',
  'pop3.host': '127.0.0.1',
  'pop3.port': '0',
  'pop3.securePort': '0',
  'smtp.host': '127.0.0.1',
  'smtp.port': '0',
  'smtp.securePort': '0',
  'log.level': 'silent',
};

export async function createHarness(): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-proto-'));
  const logs: LogLine[] = [];
  // Captured for the audit and error assertions; TEST_LOG_LEVEL also prints them.
  const logger = createLogger(process.env.TEST_LOG_LEVEL ?? 'info', {
    write(text: string) {
      if (process.env.TEST_LOG_LEVEL) process.stdout.write(text);
      for (const l of text.split('\n')) if (l.trim() !== '') logs.push(JSON.parse(l) as LogLine);
    },
  } as never);
  const store = openSqliteStore(join(dir, 'keys.db'), { touchIntervalMs: 50 });
  const tlsProvider = await createTlsProvider({ tls: { cert: '', key: '', dir: join(dir, 'certs') }, hostname: 'mail.test' }, logger);
  const authenticator = new Authenticator(store, logger);
  const sessions = new SessionRegistry(store, logger);
  sessions.start();
  return {
    dir,
    logs,
    audits: () => logs.filter((l) => l.audit),
    store,
    logger,
    tls: tlsProvider,
    authenticator,
    sessions,
    deps(flags = {}, backends = NO_BACKENDS): ListenerDeps {
      const config: Config = loadConfig({ env: {}, flags: { ...BASE_FLAGS, 'tls.dir': join(dir, 'certs'), ...flags } });
      return { config, logger, authenticator, sessions, tls: tlsProvider, backends };
    },
    async issue(account, scopes = ['*'], extra = {}) {
      const { key, record } = await issueKey(store, 'operator', { name: 'test', account, scopes, ...extra });
      return { key, id: record.id };
    },
    async close() {
      sessions.stop();
      tlsProvider.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Address of the listener with this name. */
export function portOf(listeners: RunningListener[], name: string): number {
  const l = listeners.find((x) => x.name === name);
  if (!l) throw new Error(`no listener ${name}`);
  return l.address().port;
}

export async function closeAll(listeners: RunningListener[]): Promise<void> {
  await Promise.all(listeners.map((l) => l.close(0)));
}

/**
 * A line-oriented client over a raw TCP (or TLS) socket. Lines are queued as
 * they arrive; `line()` takes the next one or fails after a timeout. `chunks`
 * records every data event's text, to check that a reply came in one write.
 */
export class LineClient {
  private buffer = '';
  private readonly queue: string[] = [];
  private waiters: Array<() => void> = [];
  readonly chunks: string[] = [];
  closed = false;
  private closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  private constructor(public socket: net.Socket | tls.TLSSocket) {
    this.closedPromise = new Promise((r) => (this.resolveClosed = r));
    this.attach(socket);
  }

  /** Connects; `prefix` is written before anything else (e.g. a PROXY header). */
  static async connect(port: number, opts: { tls?: boolean; prefix?: string | Buffer } = {}): Promise<LineClient> {
    const socket = opts.tls
      ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, servername: 'localhost' })
      : net.connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once(opts.tls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    if (opts.prefix !== undefined) socket.write(opts.prefix);
    return new LineClient(socket);
  }

  private attach(socket: net.Socket | tls.TLSSocket): void {
    socket.on('data', (d: Buffer) => {
      const text = d.toString('utf8');
      this.chunks.push(text);
      this.buffer += text;
      let i;
      while ((i = this.buffer.indexOf('\r\n')) >= 0) {
        this.queue.push(this.buffer.slice(0, i));
        this.buffer = this.buffer.slice(i + 2);
      }
      this.wake();
    });
    socket.on('error', () => {});
    socket.once('close', () => {
      this.closed = true;
      this.resolveClosed();
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  /** The next line; rejects after `timeoutMs`, or with 'closed' when the server closed first. */
  async line(timeoutMs = 3000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const next = this.queue.shift();
      if (next !== undefined) return next;
      if (this.closed) throw new Error('closed');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timeout waiting for a line');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Lines up to and including the terminating "." of a multi-line reply (status line first). */
  async multiline(timeoutMs = 3000): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const l = await this.line(timeoutMs);
      lines.push(l);
      if (l === '.' || (lines.length === 1 && l.startsWith('-ERR'))) return lines;
    }
  }

  write(text: string | Buffer): void {
    this.socket.write(text);
  }

  /** Writes one command line and returns the first reply line. */
  async send(command: string): Promise<string> {
    this.write(`${command}\r\n`);
    return this.line();
  }

  /** Resolves once the server has closed the connection; rejects after `timeoutMs`. */
  async waitClosed(timeoutMs = 3000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.closedPromise,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('connection still open')), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Client side of STARTTLS/STLS: wraps the socket once the server said go. An empty servername sends no SNI. */
  async upgrade(servername = 'localhost'): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners('data');
    const secure = tls.connect({ socket: plain as net.Socket, rejectUnauthorized: false, servername });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
  }

  /** Lines received but not yet taken. */
  pending(): string[] {
    return [...this.queue];
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** SASL PLAIN initial response. */
export function plain(user: string, secret: string, authzid = ''): string {
  return Buffer.from(`${authzid}\0${user}\0${secret}`).toString('base64');
}
