#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { accountsCommand } from './cli/accounts.js';
import { addTokensList } from './cli/lists.js';
import { checkCommand } from './cli/check.js';
import { addSettingFlags, collect, configFrom, DB_FLAGS, UsageError, withStore } from './cli/common.js';
import { configCommand } from './cli/config-command.js';
import { eventsCommand } from './cli/events.js';
import { exitCodeOf } from './cli/exit-codes.js';
import { SPECS } from './config.js';
import { parseExpiry } from './duration.js';
import { isValidCidr } from './keys/cidr.js';
import { decodeExport } from './keys/export-codec.js';
import { KEY_SCAN_RE } from './keys/format.js';
import { looksLikeAddress, type SendingLimits } from './keys/record.js';
import { MAX_SENDING_LIMIT, SENDING_LIMIT_FIELDS } from './limits/sending-limits.js';
import { normalizeScopes } from './keys/scopes.js';
import { createLogger, flushLogsSync } from './log.js';
import { exportKey, findKey, importExportedKey, issueKey } from './services/keys.js';
import { revokeStoredKey } from './services/key-writes.js';

export function buildCli(): Command {
  const program = new Command('keygate').description('Mail credential server: SMTP, IMAP and POP3 logins with scoped API keys').version('0.1.0');

  const serve = addSettingFlags(new Command('serve').description('start Keygate (the default command: `keygate` alone, or with only options, runs it)'), Object.keys(SPECS), 'all');
  serve.action(async (opts: Record<string, unknown>) => {
    const config = configFrom(opts);
    const logger = createLogger(config.log.level);
    // Loaded here, not at the top: the other commands start in a fraction of the time without the whole server.
    const { startServer } = await import('./server.js');
    const server = await startServer(config, logger);
    const stop = (signal: string) => {
      logger.info({ signal }, 'shutting down');
      server.close().then(
        () => {
          flushLogsSync();
          process.exit(0);
        },
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          flushLogsSync();
          process.exit(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  program.addCommand(serve);

  const tokens = new Command('tokens').description('issue, export, import, list and revoke access tokens');
  addSettingFlags(tokens.command('issue').description('issue a token; prints only the token'), DB_FLAGS)
    .option('-n, --name <text>', 'what the token is for')
    .option('-d, --description <text>', 'the same as --name (the reference workflow\'s spelling)')
    .option('-s, --scope <scope>', 'scope (repeatable or comma-separated; default *)', collect, [])
    .option('-a, --account <address>', 'bind the token to this account')
    .option('--expires <when>', 'expiry: ISO date or duration such as 30d')
    .option('--allowed-ip <cidr>', 'allow only this address or range (repeatable)', collect, [])
    .option('--canary', 'a canary: looks like any token but grants nothing; every use is refused and raised as key.canary_used')
    .option('--messages-per-hour <n>', 'SMTP: at most this many messages per clock hour')
    .option('--recipients-per-message <n>', 'SMTP: at most this many recipients in one message')
    .option('--recipients-per-day <n>', 'SMTP: at most this many recipients per UTC day')
    .action(async (opts: Record<string, unknown>) => {
      let expiresAt: string | null = null;
      if (opts.expires !== undefined) {
        expiresAt = parseExpiry(String(opts.expires));
        if (expiresAt === null) throw new UsageError('--expires: expected an ISO date or a duration like 30d');
        if (Date.parse(expiresAt) <= Date.now()) throw new UsageError(`--expires: ${expiresAt} is in the past`);
      }
      // Validate everything before the store is opened, so bad input writes nothing.
      if (opts.name === undefined && opts.description === undefined) throw new UsageError('a name is required: -n, --name <text> (or -d, --description <text>)');
      const scopes = normalizeScopes((opts.scope as string[]).length ? (opts.scope as string[]) : ['*']);
      const account = (opts.account as string | undefined) ?? null;
      if (account !== null && !looksLikeAddress(account)) throw new UsageError('--account: not an address (expected one such as user@example.com)');
      const allowedIps = opts.allowedIp as string[];
      allowedIps.forEach((c, i) => {
        if (!isValidCidr(c)) throw new UsageError(`--allowed-ip #${i + 1}: expected an IP address or CIDR range`);
      });
      const limits = sendingLimitFlags(opts);
      const { key } = await withStore(
        opts,
        (store) =>
          issueKey(store, 'operator', {
            ...(opts.name !== undefined && { name: String(opts.name) }),
            ...(opts.description !== undefined && { description: String(opts.description) }),
            scopes,
            account,
            expiresAt,
            allowedIps: allowedIps.length ? allowedIps : null,
            canary: opts.canary === true,
            limits,
          }),
        { create: true },
      );
      process.stdout.write(`${key}\n`);
    });

  addSettingFlags(tokens.command('export').description('print a token record as a blob (hash and metadata, never the token)'), DB_FLAGS)
    .requiredOption('-t, --token <key-or-id>', 'the token, or its id')
    .action(async (opts: Record<string, unknown>) => {
      const blob = await withStore(opts, (store) => exportKey(store, String(opts.token)));
      process.stdout.write(`${blob}\n`);
    });

  addSettingFlags(tokens.command('import').description('import an exported token record'), DB_FLAGS)
    .requiredOption('-t, --token <blob>', 'the exported blob')
    .action(async (opts: Record<string, unknown>) => {
      decodeExport(String(opts.token)); // refuse a malformed blob before touching the store
      const { result } = await withStore(opts, (store) => importExportedKey(store, 'operator', String(opts.token)), { create: true });
      process.stdout.write(result === 'imported' ? 'Token was imported\n' : 'Token already exists\n');
    });

  addTokensList(tokens);

  addSettingFlags(tokens.command('revoke').description('revoke a token'), DB_FLAGS)
    .argument('<id>', 'token id (or the token itself)')
    .action(async (id: string, opts: Record<string, unknown>) => {
      await withStore(opts, async (store) => {
        const rec = await findKey(store, id);
        await revokeStoredKey(store, rec.id, new Date().toISOString(), 'cli');
      });
      process.stdout.write('Token was revoked\n');
    });
  program.addCommand(tokens);
  program.addCommand(accountsCommand());
  program.addCommand(eventsCommand());
  program.addCommand(configCommand());
  program.addCommand(checkCommand());
  return program;
}

/** Options `keygate` itself answers; any other leading option belongs to `serve`. */
const PROGRAM_OPTIONS = ['-h', '--help', '-V', '--version'];

/**
 * `keygate` alone, or with only options, runs `serve`. Done here rather than
 * with commander's default command, which takes any unknown word as an
 * argument to `serve` ("too many arguments for 'serve'") instead of
 * answering a mistyped command with "did you mean".
 */
export function withDefaultCommand(args: string[]): string[] {
  const first = args[0];
  if (first === undefined || (first.startsWith('-') && !PROGRAM_OPTIONS.includes(first))) return ['serve', ...args];
  return args;
}

function fail(code: 1 | 2, message: string): never {
  flushLogsSync();
  // Messages name what is wrong, never the value; a key that still reaches one (a library's message) is masked.
  process.stderr.write(`keygate: ${message.replace(KEY_SCAN_RE, 'kg_[REDACTED]')}\n`);
  process.exit(code);
}

export async function main(argv = process.argv): Promise<void> {
  // `keygate tokens list | head`: a reader that stops early is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  const program = buildCli();
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const c of all(program)) {
    c.exitOverride();
    c.configureOutput({ writeErr: () => {} });
  }
  try {
    await program.parseAsync([...argv.slice(0, 2), ...withDefaultCommand(argv.slice(2))]);
  } catch (err) {
    if (err instanceof CommanderError && ['commander.helpDisplayed', 'commander.version', 'commander.help'].includes(err.code)) process.exit(0);
    const { code, message } = exitCodeOf(err);
    fail(code, message);
  }
}

await main();

/** `--messages-per-hour` and friends as limits, bounded as the API bounds them (a usage error names the flag). */
function sendingLimitFlags(opts: Record<string, unknown>): SendingLimits | null {
  const flags = { messagesPerHour: '--messages-per-hour', recipientsPerMessage: '--recipients-per-message', recipientsPerDay: '--recipients-per-day' } as const;
  const limits: SendingLimits = {};
  for (const field of SENDING_LIMIT_FIELDS) {
    const v = opts[field];
    if (v === undefined) continue;
    const n = /^\d{1,9}$/.test(String(v)) ? Number(v) : 0;
    if (n < 1 || n > MAX_SENDING_LIMIT) throw new UsageError(`${flags[field]}: expected a whole number from 1 to ${MAX_SENDING_LIMIT}`);
    limits[field] = n;
  }
  return Object.keys(limits).length > 0 ? limits : null;
}
