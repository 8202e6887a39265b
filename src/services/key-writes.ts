import { decideGrant, type Grant, type Grantor } from '../keys/policy.js';
import type { KeyRecord } from '../keys/record.js';
import type { Scope } from '../keys/scopes.js';
import type { KeyStore } from '../store/types.js';

/**
 * The only code that writes a new key to the store: create, import, rotate and
 * device replacement. Each function asks the policy (`decideGrant`) before the
 * store is touched, so no route or command, today's or a later one, can store a
 * key its caller could not grant; a test keeps every other module from calling
 * the store's key writes directly.
 */

/** The grantor may not put this key into the world; nothing was written. */
export class GrantError extends Error {
  constructor(
    readonly reason: 'account_mismatch' | 'missing_scope',
    readonly missing: Scope[] = [],
  ) {
    super(
      reason === 'account_mismatch'
        ? 'This key may only grant keys bound to its own account'
        : `This key cannot grant the "${missing[0]}" scope: a key may only grant scopes it holds`,
    );
    this.name = 'GrantError';
  }
}

/** Throws GrantError unless `grantor` may grant `grant`. */
export function assertGrant(grantor: Grantor, grant: Grant): void {
  const d = decideGrant(grantor, grant);
  if (d.allowed) return;
  throw d.reason === 'missing_scope' ? new GrantError(d.reason, d.missingScopes) : new GrantError(d.reason);
}

/**
 * Checks the grant, then creates the bound account's record if missing (a key
 * may name an address with no account yet), then stores the key. A refused
 * grant writes nothing, not even the account.
 */
export async function createGrantedKey(store: KeyStore, grantor: Grantor, record: KeyRecord): Promise<void> {
  assertGrant(grantor, record);
  if (record.account !== null) await store.ensureAccount(record.account, record.createdAt);
  await store.createKey(record);
}

/** store.importKey, after the grant check: an imported record is a key like any other. */
export async function importGrantedKey(store: KeyStore, grantor: Grantor, record: KeyRecord): Promise<'imported' | 'exists'> {
  assertGrant(grantor, record);
  return store.importKey(record);
}

/** store.rotateKey, after the grant check: a rotation must not hand out a key its caller could not have issued. */
export async function rotateGrantedKey(store: KeyStore, grantor: Grantor, oldId: string, replacement: KeyRecord, at: string): Promise<KeyRecord> {
  assertGrant(grantor, replacement);
  return store.rotateKey(oldId, replacement, at);
}

/** store.replaceDeviceKey, after the grant check and, as for create, the account record. */
export async function replaceGrantedDeviceKey(
  store: KeyStore,
  grantor: Grantor,
  replacement: KeyRecord,
  at: string,
): Promise<{ key: KeyRecord; revoked: KeyRecord[] }> {
  assertGrant(grantor, replacement);
  if (replacement.account !== null) await store.ensureAccount(replacement.account, at);
  return store.replaceDeviceKey(replacement, at);
}
