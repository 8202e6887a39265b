import { createHmac, createPublicKey, timingSafeEqual, verify as verifySignature, type KeyObject } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';

/** GitHub's headers (its secret-scanning partner program): which of its keys signed, and the base64 DER ECDSA signature over the body. */
export const GITHUB_KEY_ID_HEADER = 'github-public-key-identifier';
export const GITHUB_SIGNATURE_HEADER = 'github-public-key-signature';
/** Other scanners: `sha256=` + hex HMAC-SHA256 of the body with `leaks.hmacSecret`. */
export const HMAC_SIGNATURE_HEADER = 'keygate-signature';

export interface LeakSenderSettings {
  /** Path of GitHub's public keys (the JSON of api.github.com/meta/public_keys/secret_scanning); empty = none. */
  githubKeys: string;
  hmacSecret: string;
}

/** Who signed a report, or why it is refused (for the log only: every refusal gets the same answer). */
export type SenderCheck = { ok: true; sender: 'github' | 'hmac'; keyId?: string } | { ok: false; reason: string };

interface GithubKeys {
  stamp: string;
  keys: Map<string, KeyObject>;
}

/** Longest header value looked at: real ones are under 200 characters. */
const MAX_HEADER = 1024;

/**
 * Verifies the sender of a leaked-key report against the configured keys,
 * over the exact bytes received. GitHub's key file is re-read when it
 * changes (GitHub rotates its keys; refresh the file with curl), so no
 * restart is needed. Pure otherwise: no network.
 */
export class LeakSenders {
  private github: GithubKeys | null = null;

  constructor(private readonly settings: LeakSenderSettings) {}

  get configured(): boolean {
    return this.settings.githubKeys !== '' || this.settings.hmacSecret !== '';
  }

  check(headers: Record<string, string | string[] | undefined>, body: Buffer): SenderCheck {
    const get = (name: string): string | null => {
      const v = headers[name];
      const text = Array.isArray(v) ? v[0] : v;
      return typeof text === 'string' && text.length > 0 && text.length <= MAX_HEADER ? text.trim() : null;
    };
    const githubSignature = get(GITHUB_SIGNATURE_HEADER);
    if (githubSignature !== null) return this.checkGithub(get(GITHUB_KEY_ID_HEADER), githubSignature, body);
    const hmac = get(HMAC_SIGNATURE_HEADER);
    if (hmac !== null) return this.checkHmac(hmac, body);
    return { ok: false, reason: 'unsigned' };
  }

  private checkGithub(keyId: string | null, signature: string, body: Buffer): SenderCheck {
    if (this.settings.githubKeys === '') return { ok: false, reason: 'github_not_configured' };
    if (keyId === null) return { ok: false, reason: 'github_no_key_identifier' };
    let keys: Map<string, KeyObject>;
    try {
      keys = this.githubKeys();
    } catch (err) {
      return { ok: false, reason: `github_keys_unreadable: ${(err as Error).message}` };
    }
    const key = keys.get(keyId);
    if (!key) return { ok: false, reason: 'github_unknown_key_identifier' };
    let good = false;
    try {
      good = verifySignature('sha256', body, { key, dsaEncoding: 'der' }, Buffer.from(signature, 'base64'));
    } catch {
      good = false;
    }
    return good ? { ok: true, sender: 'github', keyId } : { ok: false, reason: 'github_bad_signature' };
  }

  private checkHmac(header: string, body: Buffer): SenderCheck {
    if (this.settings.hmacSecret === '') return { ok: false, reason: 'hmac_not_configured' };
    const m = /^sha256=([0-9a-fA-F]{64})$/.exec(header);
    if (!m) return { ok: false, reason: 'hmac_malformed' };
    const expected = createHmac('sha256', this.settings.hmacSecret).update(body).digest();
    return timingSafeEqual(expected, Buffer.from(m[1]!, 'hex')) ? { ok: true, sender: 'hmac' } : { ok: false, reason: 'hmac_bad_signature' };
  }

  /** The key file, parsed again only when its size or time changed. Throws when unreadable or malformed. */
  private githubKeys(): Map<string, KeyObject> {
    const path = this.settings.githubKeys;
    const st = statSync(path);
    const stamp = `${st.size}:${st.mtimeMs}`;
    if (this.github?.stamp === stamp) return this.github.keys;
    if (st.size > 1024 * 1024) throw new Error('larger than 1 MiB');
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as { public_keys?: unknown };
    if (!Array.isArray(parsed.public_keys)) throw new Error('no "public_keys" list');
    const keys = new Map<string, KeyObject>();
    for (const entry of parsed.public_keys as { key_identifier?: unknown; key?: unknown }[]) {
      if (typeof entry?.key_identifier !== 'string' || typeof entry.key !== 'string') throw new Error('an entry lacks key_identifier or key');
      keys.set(entry.key_identifier, createPublicKey(entry.key));
    }
    this.github = { stamp, keys };
    return keys;
  }
}
