import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, scryptSync } from 'node:crypto';
import type { Config } from '../config.js';
import type { AccountRecord } from '../keys/record.js';
import { normalizeAddress } from '../keys/record.js';
import { allPages, PAGE_MAX } from '../store/paging.js';
import type { KeyStore } from '../store/types.js';

/**
 * Upstream passwords at rest: AES-256-GCM under a key derived from
 * `KEYGATE_SECRET` (scrypt, once per process), a fresh 96-bit IV per value,
 * the account address as additional authenticated data (a sealed password
 * copied to another account does not open). Each sealed value names the key
 * it was sealed under by a short key id, so a wrong secret is told apart from
 * a damaged value.
 *
 * Sealed form: `kgsec1.<kid>.<iv>.<ciphertext>.<tag>` (base64url parts).
 */
export interface SecretBox {
  readonly key: Buffer;
  /** 8 hex characters identifying the derived key (HMAC of it, not of the secret). */
  readonly kid: string;
}

/** A sealed value cannot be opened, or no usable secret is set. The message names the setting, never a value. */
export class SecretError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SecretError';
  }
}

const PREFIX = 'kgsec1';
const SALT = 'keygate/upstream-credentials/v1';
/** Shortest secret accepted for sealing new credentials. */
export const MIN_SECRET_LENGTH = 16;
const SEALED_RE = /^kgsec1\.[0-9a-f]{8}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{22}$/;

const boxes = new Map<string, SecretBox>();

/** The key box for a secret (derived once per process and secret); null when the secret is empty. */
export function secretBox(secret: string): SecretBox | null {
  if (secret === '') return null;
  const id = createHash('sha256').update(secret).digest('hex');
  let box = boxes.get(id);
  if (!box) {
    const key = scryptSync(secret, SALT, 32, { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 });
    box = { key, kid: createHmac('sha256', key).update('kid').digest('hex').slice(0, 8) };
    boxes.set(id, box);
  }
  return box;
}

export function isSealed(value: unknown): value is string {
  return typeof value === 'string' && SEALED_RE.test(value);
}

/** Seals a password for one account. */
export function sealSecret(box: SecretBox, plaintext: string, account: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', box.key, iv);
  cipher.setAAD(Buffer.from(normalizeAddress(account)));
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return [PREFIX, box.kid, iv.toString('base64url'), ct.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
}

/** Opens a sealed password; SecretError when the secret is not the one it was sealed with, or the value was altered. */
export function openSecret(box: SecretBox, sealed: string, account: string): string {
  if (!isSealed(sealed)) throw new SecretError(`the stored upstream password of ${account} is not a sealed value`);
  const [, kid, iv, ct, tag] = sealed.split('.') as [string, string, string, string, string];
  if (kid !== box.kid) {
    throw new SecretError(`KEYGATE_SECRET (setting secret) is not the secret the upstream credentials of ${account} were sealed with`);
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', box.key, Buffer.from(iv, 'base64url'));
    decipher.setAAD(Buffer.from(normalizeAddress(account)));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8');
  } catch {
    throw new SecretError(`the stored upstream password of ${account} does not authenticate (altered, or sealed for another account)`);
  }
}

function sealedPasswordOf(account: AccountRecord): string | null {
  const p = (account.upstream as { password?: unknown } | null)?.password;
  return typeof p === 'string' ? p : null;
}

/**
 * Start-up check: when any account has stored upstream credentials, the
 * secret must be set and must open every one of them. Throws SecretError with
 * a message fit for the operator (names the setting and the first account,
 * never a value); resolves with how many accounts hold credentials.
 */
export async function checkSecret(store: KeyStore, config: Pick<Config, 'secret'>): Promise<{ accounts: number }> {
  // Only accounts with a route of their own can hold credentials; the store lists those apart, so
  // start-up reads them and not every account.
  const holders: AccountRecord[] = [];
  for await (const page of allPages((cursor) => store.listAccounts({ withUpstream: true, limit: PAGE_MAX, cursor }))) {
    holders.push(...page.filter((a) => sealedPasswordOf(a) !== null));
  }
  if (holders.length === 0) return { accounts: 0 };
  const box = secretBox(config.secret);
  if (!box) {
    throw new SecretError(
      `KEYGATE_SECRET (setting secret) is not set, but ${holders.length} account(s) have stored upstream credentials (first: ${holders[0]!.address}); set the secret they were sealed with`,
    );
  }
  for (const a of holders) openSecret(box, sealedPasswordOf(a)!, a.address);
  return { accounts: holders.length };
}
