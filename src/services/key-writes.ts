import { eventsOf } from '../events/registry.js';
import { decideGrant, type Grant, type Grantor } from '../keys/policy.js';
import type { KeyRecord } from '../keys/record.js';
import type { Scope } from '../keys/scopes.js';
import type { KeyStore } from '../store/types.js';

/**
 * The only code that writes a new key to the store: create, import, rotate and
 * device replacement. Each function asks the policy (`decideGrant`) before the
 * store is touched, so no route or command, today's or a later one, can store a
 * key its caller could not grant; a test keeps every other module from calling
 * the store's key writes directly. Each write raises its event
 * (key.created, key.rotated, key.revoked) once it is stored.
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
  raiseCreated(store, record);
}

/** store.importKey, after the grant check: an imported record is a key like any other. */
export async function importGrantedKey(store: KeyStore, grantor: Grantor, record: KeyRecord): Promise<'imported' | 'exists'> {
  assertGrant(grantor, record);
  const result = await store.importKey(record);
  if (result === 'imported') raiseCreated(store, record, { imported: true });
  return result;
}

/** store.rotateKey, after the grant check: a rotation must not hand out a key its caller could not have issued. */
export async function rotateGrantedKey(store: KeyStore, grantor: Grantor, oldId: string, replacement: KeyRecord, at: string): Promise<KeyRecord> {
  assertGrant(grantor, replacement);
  const stored = await store.rotateKey(oldId, replacement, at);
  eventsOf(store).raise('key.rotated', { account: stored.account, keyId: oldId, time: at, data: { ...keyData(stored), replacedBy: stored.id } });
  return stored;
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
  const result = await store.replaceDeviceKey(replacement, at);
  const events = eventsOf(store);
  for (const old of result.revoked) {
    events.raise('key.rotated', { account: old.account, keyId: old.id, time: at, data: { ...keyData(old), replacedBy: result.key.id, deviceId: replacement.deviceId } });
  }
  if (result.revoked.length === 0) raiseCreated(store, result.key);
  return result;
}

/**
 * store.revokeKey, raising key.revoked the first time a key is revoked
 * (revoking a revoked key again changes nothing and raises nothing).
 * `reason` says why in the event: `api`, `cli`, `leaked`, …
 */
export async function revokeStoredKey(store: KeyStore, id: string, at: string, reason: string): Promise<KeyRecord> {
  const before = await store.getKey(id);
  const record = await store.revokeKey(id, at);
  if (before?.revokedAt == null && record.revokedAt === at) {
    eventsOf(store).raise('key.revoked', { account: record.account, keyId: record.id, time: at, data: { ...keyData(record), reason } });
  }
  return record;
}

function raiseCreated(store: KeyStore, record: KeyRecord, extra: Record<string, unknown> = {}): void {
  eventsOf(store).raise('key.created', { account: record.account, keyId: record.id, time: record.createdAt, data: { ...keyData(record), ...extra } });
}

/** What an event says of a key: never its secret or hash. */
function keyData(record: KeyRecord): Record<string, unknown> {
  return { name: record.name, scopes: record.scopes, expiresAt: record.expiresAt };
}
