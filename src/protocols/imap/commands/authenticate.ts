import { astring, BEFORE_LOGIN, type ImapCommand, type ImapSession } from '../command.js';
import { decodeBase64, decodePlain } from '../../sasl-plain.js';
import { REPLY } from '../replies.js';

/** Base64 of "Username:" and "Password:", the prompts clients expect for SASL LOGIN. */
const USERNAME_PROMPT = 'VXNlcm5hbWU6';
const PASSWORD_PROMPT = 'UGFzc3dvcmQ6';

/**
 * Reads one SASL response text: the initial response when SASL-IR sent one,
 * otherwise a continuation line after `+ <prompt>`. Answers the client
 * itself (BAD) and returns null on `*` (cancel) or a closed connection.
 */
async function responseText(session: ImapSession, tag: string, initial: string | undefined, prompt: string): Promise<string | null> {
  if (initial !== undefined) return initial;
  const line = await session.readContinuation(prompt);
  if (line === null) return null;
  const text = line.toString('latin1').trim();
  if (text === '*') {
    session.send(`${tag} ${REPLY.cancelled}\r\n`);
    return null;
  }
  return text;
}

/** `responseText`, base64-decoded; answers BAD itself and returns null on bad base64. */
async function response(session: ImapSession, tag: string, initial: string | undefined, prompt: string): Promise<Buffer | null> {
  const text = await responseText(session, tag, initial, prompt);
  if (text === null) return null;
  const decoded = decodeBase64(text);
  if (decoded === null) session.protocolError(tag, REPLY.badBase64);
  return decoded;
}

async function plain(session: ImapSession, tag: string, initial: string | undefined): Promise<void> {
  const text = await responseText(session, tag, initial, '');
  if (text === null) return;
  const creds = decodePlain(text);
  if (creds.ok) return session.logIn(tag, creds.username, creds.key);
  // Acting as someone else is not a thing keys do: a refused login, audited, not a syntax error.
  if (creds.reason === 'authzid_mismatch') return session.refuseLogin(tag, creds.username, creds.reason);
  // Malformed SASL counts toward the protocol-error limit, as in POP3.
  session.protocolError(tag, creds.reason === 'base64' ? REPLY.badBase64 : REPLY.badSaslPlain);
}

async function login(session: ImapSession, tag: string, initial: string | undefined): Promise<void> {
  const user = await response(session, tag, initial, USERNAME_PROMPT);
  if (user === null) return;
  const password = await response(session, tag, undefined, PASSWORD_PROMPT);
  if (password === null) return;
  return session.logIn(tag, user.toString('utf8'), password.toString('utf8'));
}

/** AUTHENTICATE PLAIN | LOGIN [initial-response] (RFC 9051 §6.2.2, SASL-IR RFC 4959). */
export const authenticate: ImapCommand = {
  name: 'AUTHENTICATE',
  states: BEFORE_LOGIN,
  args: [{ kind: 'atom' }, { kind: 'atom', optional: true, sensitive: true }],
  handler(session, { tag, args }) {
    const mechanism = astring(args[0]).toUpperCase();
    const initial = args[1] === undefined ? undefined : astring(args[1]);
    if (mechanism !== 'PLAIN' && mechanism !== 'LOGIN') return session.send(`${tag} ${REPLY.unknownMechanism}\r\n`);
    if (!session.mayLogin) return session.send(`${tag} ${REPLY.privacyRequired}\r\n`);
    return mechanism === 'PLAIN' ? plain(session, tag, initial) : login(session, tag, initial);
  },
};
