import { CommanderError } from 'commander';
import { SecretError } from '../backends/secret.js';
import { ConfigError } from '../config.js';
import { MailboxSetupError } from '../mailbox/install.js';
import { MalformedBlobError } from '../keys/export-codec.js';
import { UnknownScopeError } from '../keys/scopes.js';
import { InputError } from '../services/keys.js';
import { NotFoundError } from '../store/errors.js';
import { UsageError } from './common.js';

/**
 * What the CLI exits with. 2: the command line, a setting or a prepared token
 * is wrong; running it again will fail the same way, so the systemd unit does
 * not restart on it (`RestartPreventExitStatus=2`). 1: it was right, but the
 * work failed (store unreachable, port taken, token not found); a retry may
 * succeed. 0 is success.
 */
export type ExitCode = 1 | 2;

/** Errors that mean "fix the configuration or the command line". */
const CONFIGURATION_ERRORS = [UsageError, ConfigError, UnknownScopeError, InputError, MalformedBlobError, SecretError, MailboxSetupError];

/** The exit code and the one line to print for an error thrown by a command. */
export function exitCodeOf(err: unknown): { code: ExitCode; message: string } {
  if (err instanceof CommanderError) return { code: 2, message: commanderMessage(err) };
  if (CONFIGURATION_ERRORS.some((E) => err instanceof E)) return { code: 2, message: firstLine((err as Error).message) };
  if (err instanceof NotFoundError) return { code: 1, message: 'token not found' };
  return { code: 1, message: firstLine(err instanceof Error ? err.message : String(err)) };
}

/** Commander's "error: unknown command 'tokns'\n(Did you mean tokens?)" as one line. */
function commanderMessage(err: CommanderError): string {
  return err.message
    .replace(/^error: /, '')
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ')
    .replace(/\(Did you mean/, '(did you mean');
}

function firstLine(message: string): string {
  return message.split('\n')[0]!;
}
