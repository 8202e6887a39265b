/**
 * What of a request URL may be logged. A client may spell a URL many ways
 * (`access%5Ftoken`, `%61ccess_token`, `kg%5F…`), and the query parser decodes
 * them all, so redaction must look at the decoded form, never at the text:
 * every part is decoded, the value of `access_token` (any case) replaced, and
 * everything re-encoded canonically. In the canonical form a key always reads
 * `kg_…` literally (encodeURIComponent leaves base62 and `_` alone), so the
 * logger's last-resort mask finds a key in any other part too.
 */

const REDACTED = '[REDACTED]';
/** Query parameters whose value is or may be a secret: `access_token`, and any name a client might put one under. */
const SECRET_PARAM = /token|key|secret|pass/i;

/** Decodes %XX escapes (and `+` in queries) as the query parser does; malformed escapes stay as they are. */
function decode(text: string, plusIsSpace: boolean): string {
  const s = plusIsSpace ? text.replaceAll('+', ' ') : text;
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    // Decode each valid escape's byte; a stray "%" stays literal.
    const bytes: number[] = [];
    for (let i = 0; i < s.length; i++) {
      const hex = s[i] === '%' ? s.slice(i + 1, i + 3) : '';
      if (/^[0-9a-f]{2}$/i.test(hex)) {
        bytes.push(parseInt(hex, 16));
        i += 2;
      } else bytes.push(...Buffer.from(s[i]!, 'utf8'));
    }
    return Buffer.from(bytes).toString('utf8');
  }
}

/** encodeURIComponent, keeping the characters RFC 3986 allows as they are (`@` and `:` in addresses read better). */
function encodePart(text: string, keep: RegExp): string {
  return encodeURIComponent(text).replace(keep, (m) => decodeURIComponent(m));
}
const PATH_KEEP = /%(40|3A|2C|2B|24|21|27|28|29|2A|3B|3D)/g;
const QUERY_KEEP = /%(40|3A|2C|24|21|27|28|29|2A|3B|2F|3F)/g;
const encodeSegment = (s: string) => encodePart(s, PATH_KEEP);
const encodeQueryPart = (s: string) => encodePart(s, QUERY_KEEP);

/** The URL as it may be logged: canonical encoding, the values of `access_token` (and of any *token*, *key*, *secret*, *pass* parameter) replaced, no fragment. */
export function scrubUrl(url: string): string {
  const hash = url.indexOf('#');
  const bare = hash >= 0 ? url.slice(0, hash) : url;
  const q = bare.indexOf('?');
  const path = q >= 0 ? bare.slice(0, q) : bare;
  const cleanPath = path
    .split('/')
    .map((segment) => encodeSegment(decode(segment, false)))
    .join('/');
  if (q < 0) return cleanPath;
  const query = bare
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      if (pair === '') return pair;
      const eq = pair.indexOf('=');
      const name = decode(eq >= 0 ? pair.slice(0, eq) : pair, true);
      if (SECRET_PARAM.test(name)) return `${encodeQueryPart(name)}=${REDACTED}`;
      return eq >= 0 ? `${encodeQueryPart(name)}=${encodeQueryPart(decode(pair.slice(eq + 1), true))}` : encodeQueryPart(name);
    })
    .join('&');
  return `${cleanPath}?${query}`;
}
