import { normalizeAddress } from '../../keys/record.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ImapSession } from './command.js';
import { REPLY } from './responses.js';

/**
 * The one login path behind LOGIN and both AUTHENTICATE mechanisms: asks the
 * Authenticator (which audits, rate-limits and decides), then either hands
 * the session over or waits `auth.failureDelay` and sends the refusal —
 * the same text for every reason; `NO [UNAVAILABLE]` when the failure is
 * temporary (rate limited, store down).
 */
export async function passwordLogin(session: ImapSession, tag: string, username: string, secret: string): Promise<void> {
  const { authenticator, limits } = session.context;
  const result = await authenticator.login({ protocol: 'imap', username, secret, ip: session.remoteAddress });
  if (result.ok) return session.authenticated(tag, result);
  await sleep(limits.failureDelayMs);
  session.send(`${tag} ${result.temporary ? REPLY.tempFail : REPLY.authFailed}\r\n`);
}

/**
 * Refuses a login the protocol layer can already tell is wrong (e.g. a SASL
 * authorization identity other than the user): audited and delayed like any
 * other failure, and answered with the same text.
 */
export async function refuseLogin(session: ImapSession, tag: string, username: string, reason: string): Promise<void> {
  const { authenticator, limits } = session.context;
  authenticator.audit('imap', session.remoteAddress, normalizeAddress(username), { ok: false, reason });
  await sleep(limits.failureDelayMs);
  session.send(`${tag} ${REPLY.authFailed}\r\n`);
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict base64 (RFC 4648, padded); `=` alone is the empty initial response (RFC 4959). Null when invalid. */
export function decodeBase64(text: string): Buffer | null {
  if (text === '=') return Buffer.alloc(0);
  if (!BASE64_RE.test(text)) return null;
  return Buffer.from(text, 'base64');
}

/** RFC 4616 message `[authzid] NUL authcid NUL passwd`; null when malformed. */
export function decodePlain(message: Buffer): { authzid: string; authcid: string; password: string } | null {
  const first = message.indexOf(0);
  const second = first < 0 ? -1 : message.indexOf(0, first + 1);
  if (first < 0 || second < 0 || message.indexOf(0, second + 1) >= 0) return null;
  const authcid = message.toString('utf8', first + 1, second);
  const password = message.toString('utf8', second + 1);
  if (authcid === '' || password === '') return null;
  return { authzid: message.toString('utf8', 0, first), authcid, password };
}
