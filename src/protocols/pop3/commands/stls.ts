import { REPLY } from '../replies.js';
import type { Pop3Command } from '../command.js';

/** STLS (RFC 2595): upgrade to TLS; anything the client pipelined after it is discarded. */
export const stls: Pop3Command = {
  name: 'STLS',
  states: ['authorization'],
  async handler(session) {
    if (session.secure) return session.protocolError(REPLY.alreadySecure);
    await session.startTls();
  },
};
