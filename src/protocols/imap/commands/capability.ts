import { ANY_STATE, type ImapCommand } from '../command.js';

/** CAPABILITY: what this connection offers now (changes with TLS and login). */
export const capability: ImapCommand = {
  name: 'CAPABILITY',
  states: ANY_STATE,
  args: [],
  handler(session, { tag }) {
    session.send(`* CAPABILITY ${session.capabilities()}\r\n${tag} OK CAPABILITY completed\r\n`);
  },
};
