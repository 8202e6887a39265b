import { heldScopes, isAdminKey } from '../keys/policy.js';
import { newKey } from '../keys/new-key.js';
import { isActive, type KeyRecord } from '../keys/record.js';
import { effectiveScopes, normalizeScopes, SCOPES, type Scope } from '../keys/scopes.js';
import { NotFoundError } from '../store/errors.js';
import type { KeyStore } from '../store/types.js';
import { InputError, issueToken } from './tokens.js';

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

/** The creator asked for a key with scopes it does not hold itself. */
export class ScopeGrantError extends Error {
  constructor(readonly missing: Scope[]) {
    super(`This key cannot grant the "${missing[0]}" scope: a key may only grant scopes it holds`);
    this.name = 'ScopeGrantError';
  }
}

/**
 * Scopes that `creator` may not put on a new key (requested ones first); empty when
 * all are allowed. A key grants only what it holds itself (`*` only by a `*`
 * key; `app` counts with what it implies); an administrator key grants anything.
 * As in the policy, `app` means nothing on an unbound key.
 */
export function ungrantableScopes(creator: Pick<KeyRecord, 'account' | 'scopes'>, requested: readonly Scope[]): Scope[] {
  if (isAdminKey(creator)) return [];
  const held = effectiveScopes(heldScopes(creator));
  const wanted = effectiveScopes(requested);
  const missing = SCOPES.filter((s) => wanted.has(s) && !held.has(s));
  // Name what was asked for before what it implies: "app", not the "imap" that app includes.
  return [...missing.filter((s) => requested.includes(s)), ...missing.filter((s) => !requested.includes(s))];
}

function assertGrantable(creator: Pick<KeyRecord, 'account' | 'scopes'>, requested: readonly Scope[]): void {
  const missing = ungrantableScopes(creator, requested);
  if (missing.length > 0) throw new ScopeGrantError(missing);
}

function checkName(raw: string): string {
  const name = raw.trim();
  if (name.length < 1 || name.length > 100) throw new InputError('name must be 1-100 characters', 'name');
  return name;
}

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
}

/**
 * Issues a key bound to `account`. Errors: InputError / UnknownScopeError (bad
 * input), ScopeGrantError (the creator lacks a requested scope).
 */
export async function createCredential(
  store: KeyStore,
  creator: KeyRecord,
  account: string,
  input: CreateCredentialInput,
  now = new Date(),
): Promise<{ key: string; record: KeyRecord }> {
  const name = checkName(input.name);
  const scopes = normalizeScopes(input.scopes);
  if (scopes.length === 0) throw new InputError('scopes must not be empty', 'scopes');
  assertGrantable(creator, scopes);
  return issueToken(store, { description: name, scopes, account, expiresAt: input.expiresAt ?? null, allowedIps: input.allowedIps ?? null }, now);
}

/** Revokes one of the account's keys. NotFoundError when unknown, another account's, or already revoked. */
export async function revokeCredential(store: KeyStore, account: string, keyId: string, now = new Date()): Promise<void> {
  const key = await getCredential(store, account, keyId);
  if (key.revokedAt !== null) throw new NotFoundError('key');
  await store.revokeKey(key.id, now.toISOString());
}

/**
 * Replaces an active key by a new one with the same name, scopes, expiry,
 * address list and device, in one atomic store step (the old key stops
 * working at the instant the new one starts). NotFoundError when the key is
 * not an active key of the account; ConflictError when a concurrent request
 * revoked or rotated it first; ScopeGrantError when the caller could not
 * have issued such a key (rotating must not hand out a stronger key).
 */
export async function rotateCredential(
  store: KeyStore,
  creator: KeyRecord,
  account: string,
  keyId: string,
  now = new Date(),
): Promise<{ key: string; record: KeyRecord }> {
  const old = await getCredential(store, account, keyId);
  if (!isActive(old, now)) throw new NotFoundError('key');
  assertGrantable(creator, old.scopes);
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
    },
    now,
  );
  await store.rotateKey(old.id, made.record, now.toISOString());
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
 */
export async function createMobileCredential(
  store: KeyStore,
  creator: KeyRecord,
  account: string,
  input: MobileInput,
  now = new Date(),
): Promise<{ key: string; record: KeyRecord }> {
  const name = checkName(input.name);
  // No grant check here: the issue makes api:write (or app) enough to provision a
  // device, and a mobile key is a fixed mail-only set for the caller's own account.
  void creator;
  const at = now.toISOString();
  const made = newKey({ name, account, scopes: [...MOBILE_SCOPES], platform: input.platform, deviceId: input.deviceId }, now);
  await store.ensureAccount(account, at);
  const { key: record } = await store.replaceDeviceKey(made.record, at);
  return { key: made.key, record };
}
