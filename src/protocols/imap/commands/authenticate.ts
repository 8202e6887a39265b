import { astring, BEFORE_LOGIN, type ImapCommand, type ImapSession } from '../command.js';
import { mechanismNamed, SaslExchange } from '../../sasl-mechanisms.js';
import { REPLY } from '../replies.js';

/**
 * Reads one SASL response after `+ <challenge>`. Answers the client itself
 * (BAD) and returns null on `*` (cancel); null too on a closed connection.
 */
async function respond(session: ImapSession, tag: string, challenge: string): Promise<string | null> {
  const line = await session.readContinuation(challenge);
  if (line === null) return null;
  const text = line.toString('latin1').trim();
  if (text === '*') {
    session.send(`${tag} ${REPLY.cancelled}\r\n`);
    return null;
  }
  return text;
}

/**
 * AUTHENTICATE PLAIN | LOGIN | OAUTHBEARER | XOAUTH2 [initial-response]
 * (RFC 9051 §6.2.2, SASL-IR RFC 4959, RFC 7628). The mechanisms are decoded
 * by the one shared module (src/protocols/sasl-mechanisms.ts); a bearer
 * mechanism's key is the token.
 */
export const authenticate: ImapCommand = {
  name: 'AUTHENTICATE',
  states: BEFORE_LOGIN,
  args: [{ kind: 'atom' }, { kind: 'atom', optional: true }],
  async handler(session, { tag, args }) {
    const mechanism = mechanismNamed(astring(args[0]));
    const initial = args[1] === undefined ? undefined : astring(args[1]);
    if (!mechanism) return session.send(`${tag} ${REPLY.unknownMechanism}\r\n`);
    if (!session.mayLogin) return session.send(`${tag} ${REPLY.privacyRequired}\r\n`);
    const exchange = new SaslExchange(mechanism);
    const step = await exchange.run(initial, (challenge) => respond(session, tag, challenge));
    if (step === null) return;
    if (step.kind === 'credentials') return session.logIn(tag, step.username, step.key, exchange.failureChallenge() ?? undefined);
    // Acting as someone else is not a thing keys do: a refused login, audited, not a syntax error.
    if (step.kind === 'refused') return session.refuseLogin(tag, step.username, step.reason);
    // Malformed SASL counts toward the protocol-error limit, as in POP3.
    session.protocolError(tag, step.reason === 'base64' ? REPLY.badBase64 : mechanism === 'PLAIN' ? REPLY.badSaslPlain : REPLY.badSasl);
  },
};
