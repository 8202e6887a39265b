import { REPLY } from '../replies.js';
import type { Pop3Command } from '../command.js';

/** USER (RFC 1939): remembers the account address (or alias) for PASS. */
export const user: Pop3Command = {
  name: 'USER',
  states: ['authorization'],
  handler(session, args) {
    if (!session.mayLogin) return session.reply(REPLY.tlsRequired);
    const name = args.trim();
    if (name === '') return session.protocolError(REPLY.missingUser);
    session.pendingUser = name;
    session.reply(REPLY.userAccepted);
  },
};
