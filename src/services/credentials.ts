import { newKey } from '../keys/new-key.js';
import type { Grantor } from '../keys/policy.js';
import { isActive, type KeyRecord } from '../keys/record.js';
import { normalizeScopes, type Scope } from '../keys/scopes.js';
import { NotFoundError } from '../store/errors.js';
import type { KeyStore } from '../store/types.js';
import { replaceGrantedDeviceKey, revokeStoredKey, rotateGrantedKey } from './key-writes.js';
import { checkKeyName, InputError, issueKey } from './keys.js';

/**
 * The SMTP Credentials API (reference 004) as plain functions over a store.
 * Every function acts on one account, named by the caller (the key's own
 * account, or the URL's for administrator keys); a key of another account is
 * reported as not found, so ids never leak across accounts.
 */

/** Scopes of a mobile key: what a mail app needs to log in, nothing more. */
export const MOBILE_SCOPES: Scope[] = ['smtp', 'imap', 'pop3'];
export const PLATFORMS = ['ios', 'android', 'macos', 'windows', 'web'] as const;
export type Platform = (typeof PLATFORMS)[number];

/** The account's active keys (not revoked, not expired), newest first; as many as the key limit allows. */
export async function listCredentials(store: KeyStore, account: string, now = new Date()): Promise<KeyRecord[]> {
  return store.activeKeys(account, now);
}

/** The account's key with this id. NotFoundError when unknown or another account's. */
export async function getCredential(store: KeyStore, account: string, keyId: string): Promise<KeyRecord> {
  const key = await store.getKey(keyId);
  if (!key || key.account !== account) throw new NotFoundError('key');
  return key;
}

export interface CreateCredentialInput {
  name: string;
  scopes: readonly string[];
  expiresAt?: string | null;
  allowedIps?: readonly string[] | null;
  canary?: boolean;
  limits?: unknown;
}

/**
 * Issues a key bound to `account`. Errors: InputError / UnknownScopeError (bad
 * input), GrantError (the creator could not grant such a key).
 */
export async function createCredential(
  store: KeyStore,
  creator: Grantor,
  account: string,
  input: CreateCredentialInput,
  now = new Date(),
): Promise<{ key: string; record: KeyRecord }> {
  const name = checkKeyName(input.name);
  const scopes = normalizeScopes(input.scopes);
  if (scopes.length === 0) throw new InputError('scopes must not be empty', 'scopes');
  const { canary, limits } = input;
  return issueKey(store, creator, { name, scopes, account, expiresAt: input.expiresAt ?? null, allowedIps: input.allowedIps ?? null, canary, limits }, now);
}

/** Revokes one of the account's keys. NotFoundError when unknown, another account's, or already revoked. */
export async function revokeCredential(store: KeyStore, account: string, keyId: string, now = new Date()): Promise<void> {
  const key = await getCredential(store, account, keyId);
  if (key.revokedAt !== null) throw new NotFoundError('key');
  await revokeStoredKey(store, key.id, now.toISOString(), 'api');
}

/**
 * Replaces an active key by a new one with the same name, scopes, expiry,
 * address list, device, canary mark and sending limits, in one atomic store step (the old key stops
 * working at the instant the new one starts). NotFoundError when the key is
 * not an active key of the account; ConflictError when a concurrent request
 * revoked or rotated it first; GrantError when the caller could not
 * have issued such a key (rotating must not hand out a stronger key).
 */
export async function rotateCredential(
  store: KeyStore,
  creator: Grantor,
  account: string,
  keyId: string,
  now = new Date(),
): Promise<{ key: string; record: KeyRecord }> {
  const old = await getCredential(store, account, keyId);
  if (!isActive(old, now)) throw new NotFoundError('key');
  const made = newKey(
    {
      name: old.name,
      account,
      scopes: old.scopes,
      expiresAt: old.expiresAt,
      allowedIps: old.allowedIps,
      platform: old.platform,
      deviceId: old.deviceId,
      rotatedFrom: old.id,
      canary: old.canary,
      limits: old.limits,
    },
    now,
  );
  await rotateGrantedKey(store, creator, old.id, made.record, now.toISOString());
  return made;
}

export interface MobileInput {
  name: string;
  platform: Platform;
  deviceId: string;
}

/**
 * Issues a mail-app key (smtp, imap, pop3) for one device. One live key per
 * device: the store's atomic `replaceDeviceKey` revokes the device's previous
 * keys and stores the new one in one step, so there is no instant with two
 * live keys for the device, nor none, and concurrent requests for one device
 * (from this instance or another on the same store) leave exactly one live.
 * The new record's `rotatedFrom` names the key it replaced, if any.
 * GrantError, writing nothing, unless the creator holds smtp, imap and pop3
 * for the account itself (e.g. `app`).
 */
export async function createMobileCredential(
  store: KeyStore,
  creator: Grantor,
  account: string,
  input: MobileInput,
  now = new Date(),
): Promise<{ key: string; record: KeyRecord }> {
  const name = checkKeyName(input.name);
  const made = newKey({ name, account, scopes: [...MOBILE_SCOPES], platform: input.platform, deviceId: input.deviceId }, now);
  const { key: record } = await replaceGrantedDeviceKey(store, creator, made.record, now.toISOString());
  return { key: made.key, record };
}
