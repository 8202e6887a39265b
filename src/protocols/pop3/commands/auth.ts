import { decodePlain } from '../../sasl-plain.js';
import { REPLY } from '../replies.js';
import type { Pop3Command, Pop3Session } from '../command.js';

const MECHANISMS = ['PLAIN'];

async function plain(session: Pop3Session, response: string): Promise<void> {
  const decoded = decodePlain(response.trim());
  if (decoded.ok) return session.logIn(decoded.username, decoded.key);
  // Acting as someone else is not a thing keys do: a refused login (audited, delayed), not a syntax error.
  if (decoded.reason === 'authzid_mismatch') return session.refuseLogin(decoded.username, decoded.reason);
  // Nothing could be checked against the store: a protocol error, not a failed login.
  return session.protocolError(REPLY.badSasl);
}

/**
 * AUTH (RFC 5034), PLAIN only: with an initial response (`AUTH PLAIN <b64>`)
 * or after an empty `+ ` challenge; a `*` line cancels. A bare `AUTH` lists
 * the mechanisms, as many servers do for older clients.
 */
export const auth: Pop3Command = {
  name: 'AUTH',
  states: ['authorization'],
  async handler(session, args) {
    if (!session.mayLogin) return session.reply(REPLY.tlsRequired);
    const [mechanism = '', initial, ...extra] = args.trim().split(/\s+/).filter((s) => s !== '');
    if (mechanism === '') return session.reply(REPLY.saslList, ...MECHANISMS, '.');
    if (!MECHANISMS.includes(mechanism.toUpperCase())) return session.protocolError(REPLY.badMechanism);
    if (extra.length > 0) return session.protocolError(REPLY.badSasl);
    if (initial !== undefined) return plain(session, initial);
    const line = await session.readContinuation(REPLY.saslContinue);
    if (line === null) return;
    if (line.trim() === '*') return session.reply(REPLY.saslCancelled);
    await plain(session, line);
  },
};
