import { normalizeAddress } from '../keys/record.js';

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Strict base64 (RFC 4648, padded, no whitespace); `=` alone is the empty
 * response (RFC 4959, RFC 5034). Null when invalid.
 */
export function decodeBase64(text: string): Buffer | null {
  if (text === '=') return Buffer.alloc(0);
  if (!BASE64_RE.test(text)) return null;
  return Buffer.from(text, 'base64');
}

/**
 * True when a SASL authorization identity names the same user as the
 * authentication identity (compared as account addresses: case and
 * surrounding space do not count), or when either is empty. Keys cannot act
 * as someone else, so anything else is a refused login. Shared with SMTP,
 * where smtp-server decodes PLAIN itself.
 */
export function authzidMatches(authzid: string, authcid: string): boolean {
  return authzid === '' || authcid === '' || normalizeAddress(authzid) === normalizeAddress(authcid);
}

export type PlainResult =
  | { ok: true; username: string; key: string }
  /** `base64`: not strict padded base64. `malformed`: not `authzid NUL authcid NUL passwd`, or no user name, or no password. */
  | { ok: false; reason: 'base64' | 'malformed' }
  /** The authzid names someone other than the authcid: a refused login (audited), not a protocol error. */
  | { ok: false; reason: 'authzid_mismatch'; username: string };

/**
 * Decodes a base64 SASL PLAIN response (RFC 4616): `[authzid] NUL authcid NUL
 * passwd`. The one rule for IMAP AUTHENTICATE PLAIN and POP3 AUTH PLAIN:
 *
 * - strict padded base64 (`=` is the empty response, which is malformed);
 * - exactly three fields and a non-empty password;
 * - the user is the authcid; many clients send the user in the authzid and
 *   leave the authcid empty, so that is accepted too; both empty is malformed;
 * - an authzid naming a different user than the authcid is `authzid_mismatch`
 *   (see `authzidMatches`), carrying the authcid for the audit line.
 */
export function decodePlain(text: string): PlainResult {
  const message = decodeBase64(text);
  if (message === null) return { ok: false, reason: 'base64' };
  const fields = message.toString('utf8').split('\0');
  if (fields.length !== 3) return { ok: false, reason: 'malformed' };
  const [authzid, authcid, key] = fields as [string, string, string];
  const username = authcid || authzid;
  if (username === '' || key === '') return { ok: false, reason: 'malformed' };
  if (!authzidMatches(authzid, authcid)) return { ok: false, reason: 'authzid_mismatch', username: authcid };
  return { ok: true, username, key };
}
