import { astring, BEFORE_LOGIN, type ImapCommand } from '../command.js';
import { REPLY } from '../replies.js';

/** LOGIN user password: user = address or alias, password = key. Refused before TLS unless loopback or allowed. */
export const login: ImapCommand = {
  name: 'LOGIN',
  states: BEFORE_LOGIN,
  args: [{ kind: 'astring' }, { kind: 'astring' }],
  handler(session, { tag, args }) {
    if (!session.mayLogin) return session.send(`${tag} ${REPLY.privacyRequired}\r\n`);
    return session.logIn(tag, astring(args[0]), astring(args[1]));
  },
};
