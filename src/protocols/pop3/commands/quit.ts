import { REPLY } from '../replies.js';
import type { Pop3Command } from '../command.js';

/** QUIT (RFC 1939): always works; with no mailbox backend there is nothing to update. */
export const quit: Pop3Command = {
  name: 'QUIT',
  states: ['authorization', 'transaction'],
  handler(session) {
    session.quit(REPLY.bye);
  },
};
