import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { describeRedisTarget, parseRedisUrl } from './redis-connect.js';
import { openSqliteStore } from './sqlite.js';
import type { KeyStore } from './types.js';

export type { KeyStore, StoreEvent } from './types.js';

export interface OpenStoreOptions {
  /** Only open a store that exists (SQLite: the file); never create one. Redis stores always exist. */
  mustExist?: boolean;
}

/** Opens the store the configuration names: Redis when `dbs.redis` is set, SQLite otherwise. */
export async function openStore(config: Pick<Config, 'db' | 'dbs' | 'touchInterval' | 'limits'>, logger?: Logger, options: OpenStoreOptions = {}): Promise<KeyStore> {
  const onError = (err: unknown): void => logger?.warn({ err }, 'last-use write failed; will retry');
  const onMigration = (message: string, details: Record<string, unknown>): void => logger?.info(details, message);
  const common = { touchIntervalMs: config.touchInterval, onError, onMigration, keysPerAccount: config.limits.keysPerAccount };
  if (config.dbs.redis !== '') {
    const { openRedisStore } = await import('./redis.js');
    return openRedisStore(config.dbs.redis, common);
  }
  return openSqliteStore(config.db.path, { ...common, mustExist: options.mustExist === true });
}

/** Where a store lives, for messages: never includes credentials. */
export function describeStore(config: Pick<Config, 'db' | 'dbs'>): string {
  if (config.dbs.redis === '') return `sqlite:${config.db.path}`;
  try {
    return `redis ${describeRedisTarget(parseRedisUrl(config.dbs.redis))}`;
  } catch {
    return 'redis';
  }
}
