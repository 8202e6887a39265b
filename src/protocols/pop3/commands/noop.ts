import { REPLY } from '../replies.js';
import type { Pop3Command } from '../command.js';

/** NOOP (RFC 1939): keeps a logged-in session alive; needs no mailbox. */
export const noop: Pop3Command = {
  name: 'NOOP',
  states: ['transaction'],
  handler(session) {
    session.reply(REPLY.noop);
  },
};
