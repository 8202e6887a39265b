import { AFTER_LOGIN, type ImapCommand } from '../command.js';
import { REPLY } from '../replies.js';

/**
 * The authenticated- and selected-state commands (RFC 9051 and the common
 * extensions). Keygate's own protocol code never serves a mailbox: with a
 * backend the session is piped to it right after login, so these run only
 * when no backend is configured, and all give the same answer. One module
 * for all of them, rather than ~35 identical files.
 */
export const MAILBOX_COMMANDS = [
  'SELECT', 'EXAMINE', 'CREATE', 'DELETE', 'RENAME', 'SUBSCRIBE', 'UNSUBSCRIBE', 'LIST', 'LSUB', 'NAMESPACE',
  'STATUS', 'APPEND', 'IDLE', 'ENABLE', 'CHECK', 'CLOSE', 'UNSELECT', 'EXPUNGE', 'SEARCH', 'ESEARCH', 'FETCH',
  'STORE', 'COPY', 'MOVE', 'UID', 'SORT', 'THREAD', 'GETQUOTA', 'GETQUOTAROOT', 'SETQUOTA', 'GETACL', 'SETACL',
  'DELETEACL', 'LISTRIGHTS', 'MYRIGHTS', 'GETMETADATA', 'SETMETADATA', 'COMPRESS', 'NOTIFY', 'XLIST',
] as const;

export const mailboxCommands: ImapCommand[] = MAILBOX_COMMANDS.map((name) => ({
  name,
  states: AFTER_LOGIN,
  handler(session, { tag }) {
    session.send(`${tag} ${REPLY.noBackend}\r\n`);
  },
}));
