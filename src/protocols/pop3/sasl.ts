const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export type PlainResult =
  | { ok: true; username: string; secret: string }
  /** `malformed`: not base64 or not three NUL-separated fields; `authzid`: asks to act as someone else, which keys cannot do. */
  | { ok: false; reason: 'malformed' | 'authzid' };

/**
 * Decodes a SASL PLAIN message (RFC 4616): `authzid NUL authcid NUL passwd`,
 * base64-encoded; `=` stands for an empty message (RFC 5034). Many clients put
 * the username in the authzid and leave the authcid empty, so that is accepted;
 * an authzid naming a different identity than the authcid is refused.
 */
export function decodePlain(text: string): PlainResult {
  const b64 = text.trim();
  if (b64 === '=' || !BASE64_RE.test(b64)) return { ok: false, reason: 'malformed' };
  const fields = Buffer.from(b64, 'base64').toString('utf8').split('\0');
  if (fields.length !== 3) return { ok: false, reason: 'malformed' };
  const [authzid, authcid, secret] = fields as [string, string, string];
  if (authzid !== '' && authcid !== '' && authzid.toLowerCase() !== authcid.toLowerCase()) return { ok: false, reason: 'authzid' };
  const username = authcid || authzid;
  if (username === '') return { ok: false, reason: 'malformed' };
  return { ok: true, username, secret };
}
