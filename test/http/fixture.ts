import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { Authenticator } from '../../src/auth/authenticate.js';
import { loadConfig, type Config } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import type { KeyRecord } from '../../src/keys/record.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { issueKey, type IssueInput } from '../../src/services/keys.js';
import { openRedisStore } from '../../src/store/redis.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { KeyStore } from '../../src/store/types.js';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';

export type StoreKind = 'sqlite' | 'redis';

/** SQLite always; Redis too when redis-server is on PATH. For `describe.each`. */
export function storeKinds(): StoreKind[] {
  return redisAvailable() ? ['sqlite', 'redis'] : ['sqlite'];
}

// One redis-server per test file, started on first use; call stopSharedRedis in afterAll.
let redis: Promise<RedisServer> | null = null;
const dirs: string[] = [];

export async function sharedRedis(): Promise<RedisServer> {
  redis ??= startRedis();
  return redis;
}

/** Stops this file's redis-server and removes temporary SQLite files. */
export async function cleanupFixtures(): Promise<void> {
  const r = redis;
  redis = null;
  if (r) await (await r).stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

export interface Fixture {
  kind: StoreKind;
  store: KeyStore;
  app: FastifyInstance;
  config: Config;
  metrics: Metrics;
  /** Every log line the app wrote, as text. */
  logs: string[];
  /** Redis URL when the store is Redis. */
  redisUrl: string | null;
  /** An unbound `*` key. */
  adminKey: string;
  /** Issues a key straight into the store (not through HTTP). */
  issue(input: Partial<IssueInput> & { scopes: string[] }): Promise<{ key: string; record: KeyRecord }>;
  /** `app.inject` with `Authorization: Bearer <key>` when a key is given. */
  call(key: string | null, opts: InjectOptions): Promise<LightMyRequestResponse>;
  /** Builds a second app on the same store (another "instance"). */
  sibling(): Promise<FastifyInstance>;
  close(): Promise<void>;
}

export interface FixtureOptions {
  /** Dotted settings, as on the command line. */
  flags?: Record<string, unknown>;
  logLevel?: string;
}

/** Builds a store of the given kind, an app on it with captured logs, and an administrator key. */
export async function createFixture(kind: StoreKind, options: FixtureOptions = {}): Promise<Fixture> {
  let store: KeyStore;
  const redisUrl = kind === 'redis' ? (await sharedRedis()).url : null;
  const ns = `t${randomBytes(6).toString('hex')}`;
  const config = loadConfig({
    env: {},
    flags: {
      // Generous limits and a short failure delay unless a test asks otherwise.
      'auth.failureDelay': '5ms',
      'rateLimit.credentials.max': 1_000_000,
      'rateLimit.api.max': 1_000_000,
      hostname: 'mail.example.test',
      ...(redisUrl ? { 'dbs.redis': redisUrl } : {}),
      ...options.flags,
    },
  });
  // The store as the server opens it: with the configured key limit.
  const storeOptions = { touchIntervalMs: 20, keysPerAccount: config.limits.keysPerAccount };
  if (redisUrl !== null) {
    store = await openRedisStore(redisUrl, { namespace: ns, ...storeOptions });
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-http-'));
    dirs.push(dir);
    store = openSqliteStore(join(dir, 'keygate.db'), storeOptions);
  }
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      logs.push(chunk.toString());
      cb();
    },
  });
  const logger = createLogger(options.logLevel ?? 'info', sink);
  const metrics = new Metrics(store);
  const authenticator = new Authenticator({ store, logger, metrics, failureDelayMs: config.auth.failureDelay });
  const build = () => buildApp({ config, store, logger, metrics, authenticator, rateLimitNamespace: `${ns}:rl:` });
  const app = await build();
  await app.ready();
  const siblings: FastifyInstance[] = [];
  const issue: Fixture['issue'] = (input) => issueKey(store, 'operator', { name: 'test key', ...input });
  const adminKey = (await issue({ name: 'admin', scopes: ['*'] })).key;

  return {
    kind,
    store,
    app,
    config,
    metrics,
    logs,
    redisUrl,
    adminKey,
    issue,
    call(key, opts) {
      const headers = { ...(opts.headers ?? {}), ...(key !== null ? { authorization: `Bearer ${key}` } : {}) };
      return app.inject({ ...opts, headers });
    },
    async sibling() {
      const s = await build();
      await s.ready();
      siblings.push(s);
      return s;
    },
    async close() {
      for (const s of siblings) await s.close();
      await app.close();
      await store.close();
    },
  };
}

/** Asserts nothing; returns the JSON error body's code for concise expectations. */
export function errorCode(res: LightMyRequestResponse): string | undefined {
  try {
    return (res.json() as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}
