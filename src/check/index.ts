import type { Config } from '../config.js';
import { checkCertificate } from './certificate.js';
import { checkMailbox } from './mailbox.js';
import { checkStore } from './store.js';
import type { CheckResult } from './types.js';
import { checkUpstreams } from './upstreams.js';

export type { CheckResult } from './types.js';

export interface CheckOptions {
  /** Log in upstream for this account (default: an account from the store that uses each route). */
  account?: string;
}

/**
 * `keygate check`: does the configuration work? The store answers, the
 * certificate fits the names clients use and is not about to expire, the
 * local mailbox can run, and every upstream takes Keygate's login. Results in that order.
 */
export async function runChecks(config: Config, options: CheckOptions = {}): Promise<CheckResult[]> {
  const { result, store } = await checkStore(config);
  try {
    return [result, checkCertificate(config), ...checkMailbox(config), ...(await checkUpstreams(config, store, options))];
  } finally {
    await store?.close();
  }
}
