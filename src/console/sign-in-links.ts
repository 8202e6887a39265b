import { createHash, randomBytes } from 'node:crypto';
import type { KeyStore } from '../store/types.js';

/** A token is 256 random bits, base64url; anything else is not looked up. */
const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;

/**
 * One-time console sign-in links an administrator makes for an account, kept
 * like the setup links: in the key store's shared values under SHA-256 of the
 * token, with a short lifetime, and taken (read and removed in one atomic
 * step) on use, so a link signs in once, on whichever instance.
 */
export class SignInLinks {
  constructor(
    private readonly store: KeyStore,
    private readonly ttlMs: number,
  ) {}

  async create(account: string, createdBy: string, now = Date.now()): Promise<{ token: string; expiresAt: string }> {
    const token = randomBytes(32).toString('base64url');
    await this.store.putValue(name(token), JSON.stringify({ account, createdBy }), this.ttlMs);
    return { token, expiresAt: new Date(now + this.ttlMs).toISOString() };
  }

  /** The account the link was made for, once; null for an unknown, used or expired link. */
  async take(token: string): Promise<string | null> {
    if (!TOKEN_RE.test(token)) return null;
    const raw = await this.store.takeValue(name(token));
    if (raw === null) return null;
    try {
      const v = JSON.parse(raw) as { account?: unknown };
      return typeof v.account === 'string' ? v.account : null;
    } catch {
      return null;
    }
  }
}

function name(token: string): string {
  return `console-link:${createHash('sha256').update(token).digest('hex')}`;
}
