import { REPLY } from '../replies.js';
import type { Pop3Command } from '../command.js';

/**
 * PASS (RFC 1939): the rest of the line is the key (surrounding whitespace is
 * ignored by the authenticator). Success or failure, the USER name is used up.
 */
export const pass: Pop3Command = {
  name: 'PASS',
  states: ['authorization'],
  async handler(session, args) {
    if (!session.mayLogin) return session.reply(REPLY.tlsRequired);
    const username = session.pendingUser;
    if (username === null) return session.protocolError(REPLY.userFirst);
    session.pendingUser = null;
    if (args.trim() === '') return session.protocolError(REPLY.missingPass);
    await session.logIn(username, args);
  },
};
