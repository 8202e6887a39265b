import { REPLY } from '../replies.js';
import type { Pop3Command } from '../command.js';

/**
 * The RFC 1939 / 2449 mailbox commands. Keygate only reaches them when no POP3
 * backend is configured (with one, the logged-in session is piped to it), so
 * they share one handler that says so: `-ERR [SYS/PERM]`. One file rather than
 * seven identical ones; a local-mailbox backend would give each its own.
 */
const NAMES = ['STAT', 'LIST', 'RETR', 'DELE', 'RSET', 'TOP', 'UIDL'] as const;

export const mailboxCommands: Pop3Command[] = NAMES.map((name) => ({
  name,
  states: ['transaction'],
  handler(session) {
    session.reply(REPLY.noBackend);
  },
}));
