import { astring, BEFORE_LOGIN, type ImapCommand, type ImapSession } from '../command.js';
import { decodeBase64, decodePlain, passwordLogin, refuseLogin } from '../login.js';
import { REPLY } from '../responses.js';

/** Base64 of "Username:" and "Password:", the prompts clients expect for SASL LOGIN. */
const USERNAME_PROMPT = 'VXNlcm5hbWU6';
const PASSWORD_PROMPT = 'UGFzc3dvcmQ6';

/**
 * Reads one SASL response: the initial response when SASL-IR sent one,
 * otherwise a continuation line after `+ <prompt>`. Answers the client
 * itself (BAD) and returns null on `*` (cancel), bad base64 or a closed
 * connection.
 */
async function response(session: ImapSession, tag: string, initial: string | undefined, prompt: string): Promise<Buffer | null> {
  let text = initial;
  if (text === undefined) {
    const line = await session.readContinuation(prompt);
    if (line === null) return null;
    text = line.toString('latin1').trim();
    if (text === '*') {
      session.send(`${tag} ${REPLY.cancelled}\r\n`);
      return null;
    }
  }
  const decoded = decodeBase64(text);
  if (decoded === null) session.send(`${tag} ${REPLY.badBase64}\r\n`);
  return decoded;
}

async function plain(session: ImapSession, tag: string, initial: string | undefined): Promise<void> {
  const message = await response(session, tag, initial, '');
  if (message === null) return;
  const creds = decodePlain(message);
  if (creds === null) return session.send(`${tag} ${REPLY.badSaslPlain}\r\n`);
  // Acting as someone else is not a thing keys do: an authorization identity must name the same user.
  if (creds.authzid !== '' && creds.authzid.toLowerCase() !== creds.authcid.toLowerCase()) return refuseLogin(session, tag, creds.authcid, 'authzid_mismatch');
  return passwordLogin(session, tag, creds.authcid, creds.password);
}

async function login(session: ImapSession, tag: string, initial: string | undefined): Promise<void> {
  const user = await response(session, tag, initial, USERNAME_PROMPT);
  if (user === null) return;
  const password = await response(session, tag, undefined, PASSWORD_PROMPT);
  if (password === null) return;
  return passwordLogin(session, tag, user.toString('utf8'), password.toString('utf8'));
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
