import type { Command } from 'commander';
import { looksLikeAddress, type AccountRecord, type KeyRecord } from '../keys/record.js';
import { allPages, keyState, PAGE_MAX } from '../store/paging.js';
import type { KeyQuery, KeyState, KeyStore } from '../store/types.js';
import { addSettingFlags, DB_FLAGS, UsageError, withStore } from './common.js';

/*
 * `tokens list` and `accounts list`: the store is read a page at a time and
 * each page printed as it comes, so a million keys never sit in memory. The
 * table's columns are as wide as the first page needs; JSON is one array,
 * written element by element.
 */

const STATES: readonly KeyState[] = ['active', 'revoked', 'expired'];

export function addTokensList(tokens: Command): void {
  addSettingFlags(tokens.command('list').description('list tokens, newest first'), DB_FLAGS)
    .option('--json', 'print JSON')
    .option('-a, --account <address>', 'only tokens bound to this account')
    .option('--state <state>', `only tokens in this state: ${STATES.join(', ')}`)
    .option('--name-prefix <text>', 'only tokens whose description starts with this')
    .option('--address-prefix <text>', 'only tokens whose account starts with this')
    .action(async (opts: Record<string, unknown>) => {
      const query: KeyQuery = {};
      if (opts.account !== undefined) {
        if (!looksLikeAddress(String(opts.account))) throw new UsageError('--account: not an address (expected one such as user@example.com)');
        query.account = String(opts.account);
      }
      if (opts.state !== undefined) {
        if (!STATES.includes(opts.state as KeyState)) throw new UsageError(`--state: expected one of ${STATES.join(', ')}`);
        query.state = opts.state as KeyState;
      }
      if (opts.namePrefix !== undefined) query.namePrefix = String(opts.namePrefix);
      if (opts.addressPrefix !== undefined) query.addressPrefix = String(opts.addressPrefix);
      await withStore(opts, async (store) => {
        const pages = allPages((cursor) => store.listKeys({ ...query, cursor, limit: PAGE_MAX }));
        if (opts.json) await writeJsonArray(pages, ({ hash: _hash, ...rest }: KeyRecord) => rest);
        else await writeTable(['ID', 'NAME', 'ACCOUNT', 'SCOPES', 'STATE', 'LAST USED'], pages, tokenRow);
      });
    });
}

function tokenRow(k: KeyRecord): string[] {
  return [k.id, k.name, k.account ?? '-', k.scopes.join(','), keyState(k, Date.now()) + (k.canary ? ' (canary)' : ''), k.lastUsedAt ?? '-'];
}

export function addAccountsList(accounts: Command): void {
  addSettingFlags(accounts.command('list').description('list accounts by address'), DB_FLAGS)
    .option('--json', 'print JSON (without the upstream route: see accounts show)')
    .option('--prefix <text>', 'only addresses that start with this')
    .action(async (opts: Record<string, unknown>) => {
      const addressPrefix = opts.prefix === undefined ? undefined : String(opts.prefix);
      await withStore(opts, async (store: KeyStore) => {
        const pages = allPages((cursor) => store.listAccounts({ cursor, limit: PAGE_MAX, ...(addressPrefix !== undefined && { addressPrefix }) }));
        if (opts.json) await writeJsonArray(pages, ({ upstream: _upstream, ...rest }: AccountRecord) => rest);
        else await writeTable(['ADDRESS', 'DISPLAY NAME', 'ALIASES', 'DISABLED', 'CREATED'], pages, accountRow);
      });
    });
}

function accountRow(a: AccountRecord): string[] {
  return [a.address, a.displayName ?? '-', a.aliases.join(',') || '-', a.disabled ? 'yes' : 'no', a.createdAt];
}

async function writeTable<T>(header: string[], pages: AsyncIterable<T[]>, row: (item: T) => string[]): Promise<void> {
  let widths: number[] | null = null;
  for await (const page of pages) {
    const rows = page.map(row);
    if (widths === null) {
      widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
      await write(line(header, widths));
    }
    if (rows.length > 0) await write(rows.map((r) => line(r, widths!)).join(''));
  }
}

function line(cells: string[], widths: number[]): string {
  return `${cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()}\n`;
}

/** The same text as JSON.stringify(all, null, 2), without holding `all`. */
async function writeJsonArray<T>(pages: AsyncIterable<T[]>, view: (item: T) => unknown): Promise<void> {
  let first = true;
  for await (const page of pages) {
    if (page.length === 0) continue;
    const text = page.map((item) => `  ${JSON.stringify(view(item), null, 2).replaceAll('\n', '\n  ')}`).join(',\n');
    await write(`${first ? '[\n' : ',\n'}${text}`);
    first = false;
  }
  await write(first ? '[]\n' : '\n]\n');
}

/** Writes, waiting when stdout is full (a pipe to a slow reader), so memory stays one page. */
function write(text: string): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdout.write(text)) resolve();
    else process.stdout.once('drain', resolve);
  });
}
