import { BEFORE_LOGIN, type ImapCommand } from '../command.js';
import { REPLY } from '../replies.js';

/**
 * STARTTLS (RFC 9051 §6.2.1): tagged OK, then the handshake. Whatever the
 * client sent after the command before the handshake is discarded, so no
 * plaintext can be injected into the protected session.
 */
export const starttls: ImapCommand = {
  name: 'STARTTLS',
  states: BEFORE_LOGIN,
  args: [],
  handler(session, { tag }) {
    if (session.secure) return session.send(`${tag} ${REPLY.tlsActive}\r\n`);
    return session.startTls(tag);
  },
};
