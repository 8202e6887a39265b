import { spawnSync } from 'node:child_process';
import type { Config } from '../config.js';
import { findDovecot, MailboxSetupError } from '../mailbox/install.js';
import { fail, ok, type CheckResult } from './types.js';

/**
 * With `mailbox: local`, that Dovecot and its IMAP, POP3 and LMTP servers are
 * installed (what `serve` would stop on), and where the mail will be. Nothing
 * is started or written.
 */
export function checkMailbox(config: Config): CheckResult[] {
  if (config.mailbox !== 'local') return [];
  try {
    const { binary } = findDovecot(config.mailboxDovecot);
    const version = spawnSync(binary, ['--version'], { encoding: 'utf8' }).stdout.trim().split(' ')[0] ?? '';
    return [ok('local mailbox', `Dovecot ${version} (${binary}) with IMAP, POP3 and LMTP; mail in ${config.mailboxDir}`)];
  } catch (err) {
    if (err instanceof MailboxSetupError) return [fail('local mailbox', err.message)];
    throw err;
  }
}
