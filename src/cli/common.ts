import { Command, Option } from 'commander';
import { loadConfig, SPECS, type Config } from '../config.js';
import { openStore } from '../store/index.js';
import type { KeyStore } from '../store/types.js';

/** Exit 2: the command line is wrong. Exit 1: it was right but the work failed. */
export class UsageError extends Error {}

/** The settings every store-using command takes as flags (the rest come from the config file or the environment). */
export const DB_FLAGS = ['db.path', 'dbs.redis'];

export function addSettingFlags(cmd: Command, keys: readonly string[]): Command {
  cmd.option('--config <file>', 'JSON configuration file');
  for (const key of keys) cmd.addOption(new Option(`--${key} <value>`, SPECS[key]!.doc).hideHelp(!DB_FLAGS.includes(key) && key !== 'preparedToken'));
  return cmd;
}

export function configFrom(opts: Record<string, unknown>): Config {
  const flags: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(SPECS)) {
    if (opts[key] === undefined) continue;
    // Registered as (hidden) flags only to refuse them with a useful message.
    if (spec.secret) throw new UsageError(`--${key} is not accepted on the command line, where other users can read it: set ${spec.env} or put it in the --config file`);
    flags[key] = opts[key];
  }
  const file = (opts.config as string | undefined) ?? process.env.KEYGATE_CONFIG;
  return loadConfig({ file, flags });
}

/** Opens the store for one command and closes it afterwards, whatever happens. */
export async function withConfigStore<T>(config: Config, fn: (store: KeyStore) => Promise<T>): Promise<T> {
  const store = await openStore(config);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export async function withStore<T>(opts: Record<string, unknown>, fn: (store: KeyStore) => Promise<T>): Promise<T> {
  return withConfigStore(configFrom(opts), fn);
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
