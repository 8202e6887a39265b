import { setTimeout as sleep } from 'node:timers/promises';
import { Command, Option } from 'commander';
import { looksLikeAddress, normalizeAddress } from '../keys/record.js';
import type { LoginEntry, LoginQuery, LoginResult } from '../store/activity.js';
import type { KeyStore } from '../store/types.js';
import { addSettingFlags, configFrom, DB_FLAGS, UsageError, withConfigStore } from './common.js';

const FOLLOW_EVERY_MS = 1000;
const MAX_LIMIT = 500;

/**
 * `keygate events`: the login history, as the API shows it. Without
 * --account or --key, the attempts that named no known account (unknown
 * names, unbound keys). --follow keeps printing new attempts until stopped.
 */
export function eventsCommand(): Command {
  return addSettingFlags(new Command('events').description('show the login history (newest last): every attempt with a key, on every surface'), [
    ...DB_FLAGS,
    'events.historyMax',
    'events.historyRetention',
  ])
    .option('-a, --account <address>', "the account's attempts")
    .option('-k, --key <id>', "only this key's attempts (its account's, unless --account says another)")
    .addOption(new Option('--result <result>', 'only this result').choices(['success', 'failure', 'temporary_failure']))
    .option('--since <time>', 'only attempts at or after this ISO 8601 time')
    .option('-n, --limit <n>', `how many of the newest to show (1-${MAX_LIMIT})`, '50')
    .option('-f, --follow', 'keep printing new attempts as they are recorded (Ctrl-C stops)')
    .option('--json', 'print one JSON object per line')
    .action(async (opts: Record<string, unknown>) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) throw new UsageError(`--limit: expected 1 to ${MAX_LIMIT}`);
      const since = opts.since === undefined ? undefined : Date.parse(String(opts.since));
      if (since !== undefined && Number.isNaN(since)) throw new UsageError('--since: expected an ISO 8601 time such as 2026-01-31T12:00:00Z');
      let account: string | null | undefined;
      if (opts.account !== undefined) {
        if (!looksLikeAddress(String(opts.account))) throw new UsageError('--account: not an address (expected one such as user@example.com)');
        account = normalizeAddress(String(opts.account));
      }
      const config = configFrom(opts);
      const bounds = { maxPerAccount: config.events.historyMax, retentionMs: config.events.historyRetention };
      await withConfigStore(config, async (store) => {
        if (account === undefined) account = opts.key !== undefined ? await accountOfKey(store, String(opts.key)) : null;
        const query: LoginQuery = {
          account,
          ...(opts.key !== undefined && { keyId: String(opts.key) }),
          ...(opts.result !== undefined && { result: opts.result as LoginResult }),
          ...(since !== undefined && { since }),
          limit,
        };
        const print = (entries: LoginEntry[]): void => {
          for (const e of entries.toReversed()) process.stdout.write(`${opts.json ? JSON.stringify(e) : line(e)}\n`);
        };
        let newest = (await store.activity.listLogins(query, bounds)).entries;
        print(newest);
        if (!opts.follow) return;
        let last = newest[0]?.id ?? null;
        const stop = new AbortController();
        process.once('SIGINT', () => stop.abort());
        process.once('SIGTERM', () => stop.abort());
        while (!stop.signal.aborted) {
          await sleep(FOLLOW_EVERY_MS, undefined, { signal: stop.signal }).catch(() => {});
          if (stop.signal.aborted) break;
          newest = (await store.activity.listLogins({ ...query, limit: MAX_LIMIT }, bounds)).entries.filter((e) => last === null || newer(e.id, last));
          if (newest.length === 0) continue;
          print(newest);
          last = newest[0]!.id;
        }
      });
    });
}

async function accountOfKey(store: KeyStore, id: string): Promise<string | null> {
  const key = await store.getKey(id);
  if (!key) throw new UsageError(`--key: no key with id ${id}`);
  return key.account;
}

/** Cursors compare as numbers, part by part (SQLite: one number; Redis stream ids: ms-seq). */
function newer(a: string, b: string): boolean {
  const [a1 = 0, a2 = 0] = a.split('-').map(Number);
  const [b1 = 0, b2 = 0] = b.split('-').map(Number);
  return a1 !== b1 ? a1 > b1 : a2 > b2;
}

function line(e: LoginEntry): string {
  const client = e.client ? [e.client.name, e.client.version].filter(Boolean).join(' ') : '';
  const protocol = e.method ? `${e.protocol}-${e.method}` : e.protocol;
  return [
    new Date(e.at).toISOString(),
    e.result.padEnd(17),
    protocol.padEnd(16),
    e.ip.padEnd(15),
    (e.account ?? (e.username !== undefined ? `?${e.username}` : '-')).padEnd(24),
    (e.keyId ?? '-').padEnd(36),
    e.reason ?? '-',
    e.newNetwork ? 'NEW-NETWORK' : '',
    client,
  ]
    .join('  ')
    .trimEnd();
}
