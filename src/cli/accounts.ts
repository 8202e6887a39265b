import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { setAccountUpstream, UpstreamInputError, upstreamView, type AccountUpstreamInput } from '../backends/accounts.js';
import { checkAccountUpstream } from '../backends/routing.js';
import { checkSecret, MIN_SECRET_LENGTH } from '../backends/secret.js';
import { parseJson } from '../json-text.js';
import { looksLikeAddress, normalizeAddress } from '../keys/record.js';
import { PROTOCOLS } from '../keys/scopes.js';
import { createAccount } from '../services/accounts.js';
import { NotFoundError } from '../store/errors.js';
import { addAccountsList } from './lists.js';
import { addSettingFlags, collect, configFrom, DB_FLAGS, UsageError, withConfigStore, withStore } from './common.js';

/**
 * `keygate accounts …`: create accounts and manage an account's own upstream
 * route. The upstream password never comes from the command line (it would
 * show in `ps` and shell history): it is read from the route file or, with
 * `--password-stdin`, from standard input; no output ever shows it.
 */
export function accountsCommand(): Command {
  const accounts = new Command('accounts').description("create and list accounts, and set an account's own upstream route");

  addSettingFlags(accounts.command('add').description('create an account'), DB_FLAGS)
    .argument('<address>', 'the account address (what clients log in with)')
    .option('--display-name <name>', 'a name for people')
    .option('--alias <address>', 'another address of the account (repeatable)', collect, [])
    .action(async (address: string, opts: Record<string, unknown>) => {
      const addr = checkAddress(address, '<address>');
      const aliases = (opts.alias as string[]).map((a) => checkAddress(a, '--alias'));
      if (aliases.includes(addr)) throw new UsageError(`--alias: ${addr} is the account address itself`);
      const created = await withStore(
        opts,
        (store) => createAccount(store, { address: addr, aliases, ...(opts.displayName !== undefined && { displayName: String(opts.displayName) }) }),
        { create: true },
      );
      process.stdout.write(`Account ${created.address} was created\n`);
    });

  addAccountsList(accounts);

  addSettingFlags(accounts.command('upstream').description("set (replace) or clear an account's own upstream route"), DB_FLAGS)
    .argument('<address>', 'the account address')
    .option('--route <file>', "JSON file with the route, as the body of PUT /api/accounts/{account}/upstream ('-' = standard input)")
    .option('--password-stdin', 'read the upstream password from standard input (one line)')
    .option('--clear', 'remove the route and its stored credentials')
    .addHelpText(
      'after',
      '\nThe upstream password comes from the route file ("password") or --password-stdin, never from the command line.\n' +
        `Sealing it needs KEYGATE_SECRET (at least ${MIN_SECRET_LENGTH} characters): the secret the server runs with.\n` +
        'Example: printf %s "$PW" | keygate accounts upstream ann@example.com --route route.json --password-stdin',
    )
    .action(async (address: string, opts: Record<string, unknown>) => {
      const addr = checkAddress(address, '<address>');
      const file = opts.route as string | undefined;
      if ((file === undefined) === !opts.clear) throw new UsageError('give either --route <file> or --clear');
      if (opts.clear && opts.passwordStdin) throw new UsageError('--password-stdin does not go with --clear');
      if (file === '-' && opts.passwordStdin) throw new UsageError('--route - and --password-stdin cannot both read standard input');

      // Everything checked before the store is opened, so bad input writes nothing.
      let input: AccountUpstreamInput | null = null;
      if (file !== undefined) {
        input = parseRoute(readInput(file, '--route'), file === '-' ? 'standard input' : file);
        if (opts.passwordStdin) {
          if (input.password !== undefined) throw new UsageError('--password-stdin: the route file already has a password');
          input.password = readPasswordStdin();
        }
      }
      const config = configFrom(opts);
      const sealing = typeof input?.password === 'string';
      if (sealing && config.secret.length < MIN_SECRET_LENGTH) {
        throw new UsageError(`storing an upstream password needs KEYGATE_SECRET (setting secret) of at least ${MIN_SECRET_LENGTH} characters`);
      }

      const view = await withConfigStore(config, async (store) => {
        // Seal only under the secret the stored credentials were sealed with, or the server would not start.
        if (sealing) await checkSecret(store, config);
        try {
          return upstreamView(await setAccountUpstream(store, config, addr, input));
        } catch (err) {
          if (err instanceof UpstreamInputError) throw new UsageError(`--route: ${err.message}`);
          throw accountNotFound(err, addr);
        }
      });
      process.stdout.write(`${JSON.stringify(view, null, 2)}\n`);
    });

  addSettingFlags(accounts.command('show').description("print an account's upstream route as JSON (passwordSet, never the password)"), DB_FLAGS)
    .argument('<address>', 'the account address')
    .action(async (address: string, opts: Record<string, unknown>) => {
      const addr = checkAddress(address, '<address>');
      const account = await withStore(opts, (store) => store.getAccount(addr));
      if (!account) throw accountNotFound(new NotFoundError(`account ${addr}`), addr);
      process.stdout.write(`${JSON.stringify(upstreamView(account), null, 2)}\n`);
    });

  return accounts;
}

function checkAddress(value: string, what: string): string {
  if (!looksLikeAddress(value)) throw new UsageError(`${what}: not an address (expected one such as user@example.com)`);
  return normalizeAddress(value);
}

/** main() reports a bare NotFoundError as a missing token; say which account instead (exit 1). */
function accountNotFound(err: unknown, address: string): unknown {
  return err instanceof NotFoundError ? new Error(`account ${address} not found`) : err;
}

function readInput(file: string, what: string): string {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new UsageError(`${what}: cannot read ${file === '-' ? 'standard input' : file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** The password is standard input up to its first line break; a blank one is refused. */
function readPasswordStdin(): string {
  const text = readInput('-', '--password-stdin');
  const password = text.split(/\r?\n/, 1)[0]!;
  if (password === '') throw new UsageError('--password-stdin: standard input is empty');
  return password;
}

const ROUTE_FIELDS = [...PROTOCOLS, 'username', 'password'];

/** Parses a route file and checks its shape; errors name the field, never a value of `password`. */
export function parseRoute(text: string, source: string): AccountUpstreamInput {
  let value: unknown;
  try {
    value = parseJson(text);
  } catch (err) {
    throw new UsageError(`--route: ${source} is ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UsageError(`--route: ${source} must hold a JSON object (${ROUTE_FIELDS.join(', ')})`);
  const route = value as Record<string, unknown>;
  for (const k of Object.keys(route)) if (!ROUTE_FIELDS.includes(k)) throw new UsageError(`--route: ${k}: unknown field (${ROUTE_FIELDS.join(', ')})`);
  if (route.username !== undefined && route.username !== null && typeof route.username !== 'string') throw new UsageError('--route: username: expected a string or null');
  if (route.password !== undefined && route.password !== null && typeof route.password !== 'string') throw new UsageError('--route: password: expected a string or null');
  // The overlays and the user name as they will be stored (the password is checked when it is sealed).
  const { password: _password, username, ...overlays } = route;
  const problem = checkAccountUpstream({ ...overlays, ...(typeof username === 'string' && { username: username.trim() }) });
  if (problem) throw new UsageError(`--route: invalid upstream route: ${problem}`);
  return route as AccountUpstreamInput;
}
