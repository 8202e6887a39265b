import { MECHANISMS, mechanismNamed, SaslExchange } from '../../sasl-mechanisms.js';
import { REPLY } from '../replies.js';
import type { Pop3Command, Pop3Session } from '../command.js';

/** Reads one SASL response after `+ <challenge>`; answers and returns null on `*` (cancel), null on a closed connection. */
async function respond(session: Pop3Session, challenge: string): Promise<string | null> {
  const line = await session.readContinuation(`${REPLY.saslContinue}${challenge}`);
  if (line === null) return null;
  const text = line.trim();
  if (text === '*') {
    session.reply(REPLY.saslCancelled);
    return null;
  }
  return text;
}

/**
 * AUTH (RFC 5034) with PLAIN, LOGIN, OAUTHBEARER (RFC 7628) or XOAUTH2,
 * decoded by the one shared module (src/protocols/sasl-mechanisms.ts): with
 * an initial response (`AUTH PLAIN <b64>`) or after a `+` challenge; a `*`
 * line cancels. A bare `AUTH` lists the mechanisms, as many servers do for
 * older clients.
 */
export const auth: Pop3Command = {
  name: 'AUTH',
  states: ['authorization'],
  async handler(session, args) {
    if (!session.mayLogin) return session.reply(REPLY.tlsRequired);
    const [name = '', initial, ...extra] = args.trim().split(/\s+/).filter((s) => s !== '');
    if (name === '') return session.reply(REPLY.saslList, ...MECHANISMS, '.');
    const mechanism = mechanismNamed(name);
    if (!mechanism) return session.protocolError(REPLY.badMechanism);
    if (extra.length > 0) return session.protocolError(REPLY.badSasl);
    const exchange = new SaslExchange(mechanism);
    const step = await exchange.run(initial, (challenge) => respond(session, challenge));
    if (step === null) return;
    if (step.kind === 'credentials') return session.logIn(step.username, step.key, exchange.failureChallenge() ?? undefined);
    // Acting as someone else is not a thing keys do: a refused login (audited, delayed), not a syntax error.
    if (step.kind === 'refused') return session.refuseLogin(step.username, step.reason);
    // Nothing could be checked against the store: a protocol error, not a failed login.
    return session.protocolError(REPLY.badSasl);
  },
};
