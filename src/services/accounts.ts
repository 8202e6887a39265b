import { MAX_DISPLAY_NAME, textProblem } from '../keys/names.js';
import { normalizeAddress, type AccountRecord } from '../keys/record.js';
import type { AccountPatch, KeyStore } from '../store/types.js';
import { InputError } from './keys.js';

/**
 * Accounts as administrators manage them. Errors come from the store:
 * ConflictError when an address or alias is taken, NotFoundError for an
 * unknown account; InputError for bad input.
 */

export interface NewAccountInput {
  address: string;
  displayName?: string | null;
  aliases?: readonly string[];
  disabled?: boolean;
}

function cleanAliases(address: string, aliases: readonly string[]): string[] {
  const out = [...new Set(aliases.map(normalizeAddress))];
  if (out.includes(address)) throw new InputError('an alias cannot be the account address itself', 'aliases');
  return out;
}

function cleanDisplayName(name: string | null | undefined): string | null | undefined {
  if (name === undefined || name === null) return name;
  const t = name.trim();
  const problem = t.length > MAX_DISPLAY_NAME ? `must be at most ${MAX_DISPLAY_NAME} characters` : textProblem(t);
  if (problem) throw new InputError(`displayName ${problem}`, 'displayName');
  return t === '' ? null : t;
}

export async function createAccount(store: KeyStore, input: NewAccountInput, now = new Date()): Promise<AccountRecord> {
  const address = normalizeAddress(input.address);
  return store.createAccount({
    address,
    aliases: cleanAliases(address, input.aliases ?? []),
    displayName: cleanDisplayName(input.displayName) ?? null,
    disabled: input.disabled ?? false,
    createdAt: now.toISOString(),
    upstream: null,
  });
}

export interface AccountChanges {
  displayName?: string | null;
  aliases?: readonly string[];
  disabled?: boolean;
}

/** Applies the given fields only. Disabling takes effect at once: every key check reads the account. */
export async function updateAccount(store: KeyStore, address: string, changes: AccountChanges): Promise<AccountRecord> {
  const addr = normalizeAddress(address);
  const patch: AccountPatch = {};
  if (changes.displayName !== undefined) patch.displayName = cleanDisplayName(changes.displayName) ?? null;
  if (changes.aliases !== undefined) patch.aliases = cleanAliases(addr, changes.aliases);
  if (changes.disabled !== undefined) patch.disabled = changes.disabled;
  return store.updateAccount(addr, patch);
}

/** Deletes the account and revokes every key bound to it, in one store step. */
export async function deleteAccount(store: KeyStore, address: string, now = new Date()): Promise<void> {
  await store.deleteAccount(normalizeAddress(address), now.toISOString());
}
