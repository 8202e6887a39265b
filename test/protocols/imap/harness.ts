import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { Authenticator } from '../../../src/auth/authenticate.js';
import { createLoginLimiter, type LoginLimiterWithClose } from '../../../src/auth/limits.js';
import { SessionRegistry } from '../../../src/auth/sessions.js';
import { NO_BACKENDS, type Backends } from '../../../src/backends/types.js';
import { loadConfig, type Config } from '../../../src/config.js';
import { createLogger } from '../../../src/log.js';
import { Metrics } from '../../../src/metrics.js';
import type { RunningListener } from '../../../src/protocols/deps.js';
import { startImapListeners } from '../../../src/protocols/imap/index.js';
import { issueKey, type IssueInput } from '../../../src/services/keys.js';
import { openSqliteStore } from '../../../src/store/sqlite.js';
import type { KeyStore } from '../../../src/store/types.js';
import { createTlsProvider, type TlsProvider } from '../../../src/tls/index.js';

/** The run's self-signed certificate (test/global-setup.ts). */
export const TEST_CERT_DIR = inject('testCertDir');

export interface AuditLine {
  audit?: boolean;
  protocol?: string;
  ip?: string;
  account?: string | null;
  keyId?: string;
  result?: string;
  reason?: string | null;
  msg?: string;
}

export interface Harness {
  config: Config;
  store: KeyStore;
  authenticator: Authenticator;
  sessions: SessionRegistry;
  tls: TlsProvider;
  metrics: Metrics;
  listeners: RunningListener[];
  /** STARTTLS port. */
  port: number;
  /** Implicit-TLS port. */
  securePort: number;
  /** Every log line, parsed. */
  logs: AuditLine[];
  audits(): AuditLine[];
  /** Issues a key (default: bound to `account`, scope imap). */
  issue(input?: Partial<IssueInput>): Promise<{ key: string; id: string }>;
  close(grace?: number): Promise<void>;
}

export interface HarnessOptions {
  /** Dotted config flags over the test defaults. */
  flags?: Record<string, unknown>;
  backends?: Backends;
  /** An existing store (e.g. Redis) instead of a fresh SQLite file. */
  store?: KeyStore;
  limiter?: boolean;
  /** Limiter key prefix; instances sharing one Redis share counts only with the same prefix (default: unique). */
  limiterPrefix?: string;
}

export const ACCOUNT = 'alice@example.com';

/** Real store, real Authenticator, limiter, registry and TLS, IMAP listeners on 127.0.0.1 port 0. */
export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-imap-'));
  const config = loadConfig({
    env: {},
    flags: {
      'db.path': join(dir, 'keys.db'),
      'tls.dir': TEST_CERT_DIR,
      'imap.host': '127.0.0.1',
      'imap.port': 0,
      'imap.securePort': 0,
      'auth.failureDelay': '20ms',
      'log.level': 'info',
      touchInterval: '50ms',
      ...options.flags,
    },
  });
  const logs: AuditLine[] = [];
  const logger = createLogger(config.log.level, {
    write(line: string) {
      for (const l of line.split('\n')) if (l.trim() !== '') logs.push(JSON.parse(l) as AuditLine);
    },
  } as never);
  const store = options.store ?? openSqliteStore(config.db.path, { touchIntervalMs: config.touchInterval });
  const metrics = new Metrics(store, { processMetrics: false });
  const authenticator = new Authenticator(store, logger, metrics);
  let limiter: LoginLimiterWithClose | null = null;
  if (options.limiter !== false) {
    limiter = await createLoginLimiter(config, logger, { keyPrefix: options.limiterPrefix ?? `test:${Math.random().toString(36).slice(2)}` });
    authenticator.limiter = limiter;
  }
  const sessions = new SessionRegistry(store, logger, metrics, { recheckIntervalMs: config.sessions.recheckInterval });
  sessions.start();
  const tls = await createTlsProvider(config, logger);
  const listeners = await startImapListeners({ config, logger, authenticator, sessions, tls, backends: options.backends ?? NO_BACKENDS, metrics });
  const byName = (n: string): RunningListener => listeners.find((l) => l.name === n)!;
  let closed = false;
  return {
    config,
    store,
    authenticator,
    sessions,
    tls,
    metrics,
    listeners,
    port: byName('imap').address().port,
    securePort: byName('imaps').address().port,
    logs,
    audits: () => logs.filter((l) => l.audit),
    async issue(input = {}) {
      const made = await issueKey(store, 'operator', { name: 'test', scopes: ['imap'], account: ACCOUNT, ...input });
      return { key: made.key, id: made.record.id };
    },
    async close(grace = 0) {
      if (closed) return;
      closed = true;
      await Promise.all(listeners.map((l) => l.close(grace)));
      sessions.stop();
      await limiter?.close();
      tls.close();
      if (!options.store) await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A PROXY v1 header claiming the connection comes from `ip`. */
export function proxyV1(ip: string, port = 40000): string {
  return `PROXY TCP4 ${ip} 127.0.0.1 ${port} 143\r\n`;
}
