/**
 * Every form in which a secret could reach a log line: as is, without a
 * `kg_` prefix, percent-encoded (both cases, and encodeURIComponent), and in
 * base64 and base64url at each of the three byte alignments, so the secret is
 * found inside a larger encoded blob too (a SASL PLAIN or OAUTHBEARER
 * response, a Basic header): of the encoding, only the characters that depend
 * on the secret's bytes alone are kept.
 */
export function secretForms(secret: string): string[] {
  const bytes = Buffer.from(secret);
  const hex = (upper: boolean) => [...bytes].map((b) => `%${b.toString(16).padStart(2, '0')[upper ? 'toUpperCase' : 'toLowerCase']()}`).join('');
  const forms = new Set([secret, secret.replace(/^kg_/, ''), encodeURIComponent(secret), hex(true), hex(false)]);
  for (const offset of [0, 1, 2]) {
    const encoded = Buffer.concat([Buffer.alloc(offset), bytes]);
    // Characters that also carry bits of the bytes before the secret or after it are dropped.
    const skip = offset === 0 ? 0 : offset + 1;
    const keep = Math.floor(((offset + bytes.length) * 8) / 6) - skip - 1;
    for (const alphabet of ['base64', 'base64url'] as const) forms.add(encoded.toString(alphabet).slice(skip, skip + keep));
  }
  return [...forms];
}

/** The first secret form found in `text`, described for an assertion message, or null. */
export function findSecret(text: string, secrets: readonly string[]): string | null {
  for (const secret of secrets) {
    for (const form of secretForms(secret)) {
      if (text.includes(form)) return `${secret.slice(0, 6)}… as ${JSON.stringify(form.slice(0, 16))}…`;
    }
  }
  return null;
}
