import { MECHANISMS } from '../../sasl-mechanisms.js';
import { REPLY } from '../replies.js';
import type { Pop3Command } from '../command.js';

/**
 * CAPA (RFC 2449). Before TLS on a connection that may not send passwords in
 * the clear, USER and SASL are left out and only STLS is offered, so clients
 * upgrade first instead of trying and failing.
 */
export const capa: Pop3Command = {
  name: 'CAPA',
  states: ['authorization', 'transaction'],
  handler(session) {
    const lines: string[] = [REPLY.capaHead, 'TOP', 'UIDL', 'RESP-CODES', 'AUTH-RESP-CODE', 'PIPELINING'];
    if (session.commandState === 'authorization') {
      if (session.mayLogin) lines.push('USER', `SASL ${MECHANISMS.join(' ')}`);
      if (!session.secure) lines.push('STLS');
    }
    lines.push('IMPLEMENTATION Keygate', '.');
    session.reply(...lines);
  },
};
