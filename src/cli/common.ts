import type { Command } from 'commander';
import { resolveConfig, SPECS, type Config, type ResolvedConfig } from '../config.js';
import { EventHub } from '../events/hub.js';
import { bindEvents } from '../events/registry.js';
import { Webhooks } from '../events/webhooks.js';
import { createLogger } from '../log.js';
import { openStore } from '../store/index.js';
import type { KeyStore } from '../store/types.js';
import { PRECEDENCE_HELP, secretsHelp, settingOption } from './settings-help.js';

/** Exit 2: the command line is wrong. Exit 1: it was right but the work failed. */
export class UsageError extends Error {}

/** The settings every store-using command takes as flags (the rest come from the config file or the environment). */
export const DB_FLAGS = ['home', 'db.path', 'dbs.redis'];

/**
 * Registers `--config` and a flag for each setting in `keys`. With `listed`
 * 'all', help lists every one of them (flag, variable, default; secrets in a
 * section of their own, as they have no flag); otherwise only those named.
 */
export function addSettingFlags(cmd: Command, keys: readonly string[], listed: 'all' | readonly string[] = DB_FLAGS): Command {
  cmd.option('--config <file>', 'JSON configuration file [KEYGATE_CONFIG]');
  const shown = (key: string): boolean => !SPECS[key]!.secret && (listed === 'all' || listed.includes(key));
  // Secrets are registered (hidden) only to refuse them with a useful message.
  for (const key of keys) cmd.addOption(settingOption(key).hideHelp(!shown(key)));
  if (listed === 'all') cmd.addHelpText('after', `${secretsHelp(keys)}${PRECEDENCE_HELP}`);
  return cmd;
}

export function configFrom(opts: Record<string, unknown>): Config {
  return resolvedConfigFrom(opts).config;
}

/** The configuration a command's flags, the environment and the config file make, with each value's source. */
export function resolvedConfigFrom(opts: Record<string, unknown>): ResolvedConfig {
  const flags: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(SPECS)) {
    if (opts[key] === undefined) continue;
    // Registered as (hidden) flags only to refuse them with a useful message.
    if (spec.secret) throw new UsageError(`--${key} is not accepted on the command line, where other users can read it: set ${spec.env} or put it in the --config file`);
    flags[key] = opts[key];
  }
  const file = (opts.config as string | undefined) ?? process.env.KEYGATE_CONFIG;
  return resolveConfig({ ...(file !== undefined && { file }), flags });
}

export interface StoreUse {
  /** The command may make a new store (issue, import, add): only these create the file and its directory. */
  create?: boolean;
}

/**
 * Opens the store for one command and closes it afterwards, whatever happens.
 * Without `create`, a SQLite store that does not exist is a StoreMissingError
 * naming the path, and nothing is created: a wrong directory or `--db.path`
 * must not look like a store whose keys are gone.
 */
export async function withConfigStore<T>(config: Config, fn: (store: KeyStore) => Promise<T>, use: StoreUse = {}): Promise<T> {
  const store = await openStore(config, undefined, { mustExist: use.create !== true });
  // A command's key events (a revocation, a new key) go to the store's webhook queue; a running server sends them.
  const logger = createLogger('warn', process.stderr);
  const webhooks = new Webhooks(store, logger, config.webhooks);
  const hub = new EventHub(logger);
  hub.listen((event) => webhooks.accept(event));
  bindEvents(store, hub);
  try {
    return await fn(store);
  } finally {
    await webhooks.close();
    await store.close();
  }
}

export async function withStore<T>(opts: Record<string, unknown>, fn: (store: KeyStore) => Promise<T>, use: StoreUse = {}): Promise<T> {
  return withConfigStore(configFrom(opts), fn, use);
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
