import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Config } from '../config.js';
import { describeStore, openStore } from '../store/index.js';
import { PAGE_MAX } from '../store/paging.js';
import type { KeyStore } from '../store/types.js';
import { fail, ok, type CheckResult } from './types.js';

/**
 * The key store answers a read. A SQLite file that does not exist yet is
 * fine (`serve` makes it) and is not created here; Redis must answer within
 * its connect timeout. Resolves with the open store for the checks that need
 * accounts, or null.
 */
export async function checkStore(config: Config): Promise<{ result: CheckResult; store: KeyStore | null }> {
  const where = describeStore(config);
  if (config.dbs.redis === '' && !existsSync(config.db.path)) {
    return { result: ok('store', `sqlite ${resolve(config.db.path)} does not exist yet; \`keygate serve\` (or \`tokens issue\`) creates it`), store: null };
  }
  let store: KeyStore | null = null;
  try {
    store = await openStore(config, undefined, { mustExist: true });
    // One page: a check must not walk a store of a million accounts.
    const page = await store.listAccounts({ limit: PAGE_MAX });
    const accounts = page.items.length;
    const counted = page.nextCursor !== null ? `more than ${PAGE_MAX.toLocaleString('en-US')} accounts` : `${accounts} account${accounts === 1 ? '' : 's'}`;
    return { result: ok('store', `${where} answers (${counted})`), store };
  } catch (err) {
    await store?.close().catch(() => {});
    return { result: fail('store', `${where}: ${(err as Error).message}`), store: null };
  }
}
