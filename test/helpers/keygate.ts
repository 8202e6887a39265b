/**
 * The one test harness that starts Keygate: `startServer` itself (the same
 * assembly as `keygate serve`: store, Authenticator with its limiter,
 * live-session registry and backends, mail listeners, optionally the control
 * plane) on loopback port 0, with every log line captured and parsed, on a
 * real SQLite store (or one the test gives), optionally routed to a private
 * Dovecot.
 *
 * A file that starts Keygate once uses `startKeygate(options)`; one that
 * starts it many times on one store (different settings per test) makes a
 * `createHarness()` and calls `h.start(options)`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import type { LoginLimiter } from '../../src/auth/authenticate.js';
import { createLoginLimiter, type LoginLimiterWithClose } from '../../src/auth/limits.js';
import { NO_BACKENDS, type Backends } from '../../src/backends/types.js';
import { loadConfig, type Config } from '../../src/config.js';
import { PROTOCOLS, type Protocol } from '../../src/keys/scopes.js';
import { createLogger, type Logger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { issueKey } from '../../src/services/keys.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { KeyStore } from '../../src/store/types.js';
import { dovecotConfig, type RunningDovecot } from './dovecot.js';

/** The run's self-signed certificate (test/global-setup.ts). */
export const TEST_CERT_DIR = inject('testCertDir');

/** One captured log line, parsed (audit lines carry `audit: true`). */
export interface LogLine {
  level?: number;
  msg?: string;
  audit?: boolean;
  protocol?: string;
  ip?: string;
  account?: string | null;
  keyId?: string;
  result?: string;
  reason?: string | null;
  [field: string]: unknown;
}

/** Settings every test Keygate starts with: loopback, ephemeral ports, short delays. */
const TEST_FLAGS: Record<string, unknown> = {
  'tls.dir': TEST_CERT_DIR,
  'http.host': '127.0.0.1',
  'http.port': 0,
  'imap.host': '127.0.0.1',
  'imap.port': 0,
  'imap.securePort': 0,
  'pop3.host': '127.0.0.1',
  'pop3.port': 0,
  'pop3.securePort': 0,
  'smtp.host': '127.0.0.1',
  'smtp.port': 0,
  'smtp.securePort': 0,
  'auth.failureDelay': '10ms',
  shutdownGrace: '0ms',
  touchInterval: '50ms',
  'log.level': 'info',
};

export interface StartOptions {
  /** Dotted settings over the test defaults, as on the command line. */
  flags?: Record<string, unknown>;
  /** KEYGATE_* variables, as a deployment sets them (the test defaults and `flags` still win, as flags do over the environment). */
  env?: Record<string, string>;
  /** The mail listeners to start (default all three). */
  protocols?: Protocol[];
  /** A Dovecot every protocol is routed to (plaintext, master login, LMTP for SMTP), through the real proxy backends. */
  dovecot?: RunningDovecot;
  /**
   * What logged-in sessions are handed to, instead of the backends the
   * settings describe. Default: those backends when the test routes anywhere
   * (`dovecot`, an `upstream.*` or `mailbox` setting), else none at all, so a
   * test of Keygate's own front end logs in without an upstream (a real
   * Keygate without routes refuses such logins: see test/newcomer/).
   */
  backends?: Backends;
  /**
   * The login limiter: by default the real one from the settings (in Redis
   * with `dbs.redis`), under a key prefix of its own; null for none; or one
   * the test writes.
   */
  limiter?: LoginLimiter | null;
  /** Instances sharing one Redis share failure counts only under the same prefix (default: unique). */
  limiterPrefix?: string;
  /** Also start the HTTP control plane (default false). */
  http?: boolean;
}

/** A running Keygate: the server as `startServer` returns it, and its ports by listener name. */
export interface Keygate extends Omit<RunningServer, 'close'> {
  config: Config;
  /** The port of a listener (`imap`, `imaps`, `pop3`, `pop3s`, `smtp`, `smtps`) or of `http`. */
  port(name: string): number;
  /** Closes the listeners (letting sessions run for up to `graceMs`, default 0), the control plane and the limiter. */
  close(graceMs?: number): Promise<void>;
}

export interface Harness {
  dir: string;
  store: KeyStore;
  logger: Logger;
  /** Every log line (at info level and above unless `log.level` says otherwise), parsed. */
  logs: LogLine[];
  audits(): LogLine[];
  /** Issues a key (default: every scope) bound to `account` (null: unbound). */
  issue(account: string | null, scopes?: string[], extra?: { allowedIps?: string[]; expiresAt?: string }): Promise<{ key: string; id: string }>;
  /** Starts a Keygate on this harness's store and log. */
  start(options?: StartOptions): Promise<Keygate>;
  /** Closes every Keygate this harness started that is still running. */
  stopAll(): Promise<void>;
  /** Stops everything and removes the temporary files; the store too unless it was given. */
  close(): Promise<void>;
}

/** Whether a test's settings route sessions anywhere (then its Keygate builds the backends they describe). */
function routes(opts: StartOptions): boolean {
  if (opts.dovecot) return true;
  const setting = (k: string): boolean => k.startsWith('upstream.') || k === 'mailbox';
  return Object.keys(opts.flags ?? {}).some(setting) || Object.keys(opts.env ?? {}).some((k) => k.startsWith('KEYGATE_UPSTREAM_') || k === 'KEYGATE_MAILBOX');
}

/** A store and a captured log for one or more Keygates. */
export async function createHarness(options: { store?: KeyStore; logLevel?: string } = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-test-'));
  const logs: LogLine[] = [];
  // Captured for the audit and error assertions; TEST_LOG_LEVEL also prints them.
  const logger = createLogger(process.env.TEST_LOG_LEVEL ?? options.logLevel ?? 'info', {
    write(text: string) {
      if (process.env.TEST_LOG_LEVEL) process.stdout.write(text);
      for (const l of text.split('\n')) if (l.trim() !== '') logs.push(JSON.parse(l) as LogLine);
    },
  } as never);
  const store = options.store ?? openSqliteStore(join(dir, 'keys.db'), { touchIntervalMs: 50 });
  const running = new Set<Keygate>();

  const start = async (opts: StartOptions = {}): Promise<Keygate> => {
    const only = opts.protocols ? Object.fromEntries(PROTOCOLS.map((p) => [`${p}.enabled`, opts.protocols!.includes(p)])) : {};
    const flags = { ...TEST_FLAGS, 'db.path': join(dir, 'keys.db'), ...only, ...opts.flags };
    const config = opts.dovecot ? dovecotConfig(opts.dovecot, flags) : loadConfig({ env: opts.env ?? {}, flags });
    let limiter: LoginLimiterWithClose | null = null;
    if (opts.limiter === undefined) {
      limiter = await createLoginLimiter(config, logger, { keyPrefix: opts.limiterPrefix ?? `test:${Math.random().toString(36).slice(2)}` });
    }
    const backends = opts.backends ?? (routes(opts) ? undefined : NO_BACKENDS);
    let server: RunningServer;
    try {
      server = await startServer(config, logger, {
        store,
        limiter: opts.limiter === undefined ? limiter : opts.limiter,
        metrics: new Metrics(store, { processMetrics: false }),
        http: opts.http ?? false,
        ...(backends && { backends }),
      });
    } catch (err) {
      await limiter?.close();
      throw err;
    }
    let closing: Promise<void> | null = null;
    const keygate: Keygate = {
      ...server,
      config,
      port(name) {
        if (name === 'http') {
          const address = server.app?.server.address();
          if (!address || typeof address === 'string') throw new Error('started without http');
          return address.port;
        }
        return server.listeners.get(name).address().port;
      },
      close(graceMs = 0) {
        closing ??= (async () => {
          running.delete(keygate);
          await server.listeners.close(graceMs);
          await server.close();
          await limiter?.close();
        })();
        return closing;
      },
    };
    running.add(keygate);
    return keygate;
  };

  const stopAll = async (): Promise<void> => {
    await Promise.all([...running].map((k) => k.close()));
  };

  return {
    dir,
    store,
    logger,
    logs,
    audits: () => logs.filter((l) => l.audit),
    async issue(account, scopes = ['*'], extra = {}) {
      const { key, record } = await issueKey(store, 'operator', { name: 'test', account, scopes, ...extra });
      return { key, id: record.id };
    },
    start,
    stopAll,
    async close() {
      await stopAll();
      if (!options.store) await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A harness and one Keygate on it, closed together. */
export type SingleKeygate = Omit<Harness, 'start' | 'stopAll' | 'close'> & Keygate;

/** Starts one Keygate on a fresh harness (or on `store`); `close()` ends both. */
export async function startKeygate(options: StartOptions & { store?: KeyStore } = {}): Promise<SingleKeygate> {
  const { store, ...rest } = options;
  const logLevel = rest.flags?.['log.level'];
  const h = await createHarness({ ...(store && { store }), ...(typeof logLevel === 'string' && { logLevel }) });
  let keygate: Keygate;
  try {
    keygate = await h.start(rest);
  } catch (err) {
    await h.close();
    throw err;
  }
  return {
    ...h,
    ...keygate,
    async close(graceMs?: number) {
      await keygate.close(graceMs);
      await h.close();
    },
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
