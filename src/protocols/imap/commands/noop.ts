import { ANY_STATE, type ImapCommand } from '../command.js';

/** NOOP: nothing, successfully (clients use it as a keep-alive). */
export const noop: ImapCommand = {
  name: 'NOOP',
  states: ANY_STATE,
  args: [],
  handler(session, { tag }) {
    session.send(`${tag} OK NOOP completed\r\n`);
  },
};
