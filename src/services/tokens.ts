import { isValidCidr } from '../keys/cidr.js';
import { decodeExport, encodeExport } from '../keys/export-codec.js';
import { hashKey, isWellFormedKey } from '../keys/format.js';
import { newKey } from '../keys/new-key.js';
import { normalizeAddress, type KeyRecord } from '../keys/record.js';
import { normalizeScopes } from '../keys/scopes.js';
import type { Logger } from '../log.js';
import { NotFoundError } from '../store/errors.js';
import type { KeyStore } from '../store/types.js';

/** Bad operator or API input; the message names the problem. */
export class InputError extends Error {
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'InputError';
  }
}

export interface IssueInput {
  description: string;
  scopes: readonly string[];
  account?: string | null;
  expiresAt?: string | null;
  allowedIps?: readonly string[] | null;
  platform?: string | null;
  deviceId?: string | null;
}

const ADDRESS_RE = /^[^\s@]+@[^\s@]+$/;

/** Validates input, then stores a new key. The returned `key` is the only copy of the secret. */
export async function issueToken(store: KeyStore, input: IssueInput, now = new Date()): Promise<{ key: string; record: KeyRecord }> {
  const name = input.description.trim();
  if (name.length < 1 || name.length > 100) throw new InputError('description must be 1-100 characters', 'description');
  const scopes = normalizeScopes(input.scopes.length ? input.scopes : ['*']);
  const account = input.account ? normalizeAddress(input.account) : null;
  if (account !== null && !ADDRESS_RE.test(account)) throw new InputError(`account "${input.account}" is not an address`, 'account');
  if (input.expiresAt && Date.parse(input.expiresAt) <= now.getTime()) throw new InputError('expiry is in the past', 'expiresAt');
  for (const c of input.allowedIps ?? []) if (!isValidCidr(c)) throw new InputError(`"${c}" is not an IP address or CIDR range`, 'allowedIps');
  const made = newKey(
    {
      name,
      account,
      scopes,
      expiresAt: input.expiresAt ? new Date(input.expiresAt).toISOString() : null,
      allowedIps: input.allowedIps?.length ? [...input.allowedIps] : null,
      platform: input.platform ?? null,
      deviceId: input.deviceId ?? null,
    },
    now,
  );
  if (account !== null) await store.ensureAccount(account, now.toISOString());
  await store.createKey(made.record);
  return made;
}

/** Finds a key by its value (hashed, never stored) or by its id. */
export async function findToken(store: KeyStore, keyOrId: string): Promise<KeyRecord> {
  const t = keyOrId.trim();
  const rec = isWellFormedKey(t) ? await store.findByHash(hashKey(t)) : await store.getKey(t);
  if (!rec) throw new NotFoundError('token');
  return rec;
}

export async function exportToken(store: KeyStore, keyOrId: string): Promise<string> {
  return encodeExport(await findToken(store, keyOrId));
}

export async function importToken(store: KeyStore, blob: string): Promise<{ result: 'imported' | 'exists'; record: KeyRecord }> {
  const record = decodeExport(blob);
  return { result: await store.importKey(record), record };
}

/** Splits a prepared-token setting: one or more blobs, comma or whitespace separated. */
export function splitBlobs(text: string): string[] {
  return text.split(/[\s,]+/).filter((s) => s !== '');
}

/**
 * Decodes every prepared token (`preparedToken`): one malformed blob is an
 * InputError naming it, before anything is opened or written.
 */
export function decodePreparedTokens(text: string): KeyRecord[] {
  return splitBlobs(text).map((blob, i) => {
    try {
      return decodeExport(blob);
    } catch (err) {
      throw new InputError(`prepared token #${i + 1}: ${(err as Error).message}`, 'preparedToken');
    }
  });
}

/**
 * Imports every prepared token before any listener opens. All blobs are
 * decoded first, so one malformed blob stops start-up with nothing imported.
 */
export async function importPreparedTokens(store: KeyStore, text: string | KeyRecord[], logger: Logger): Promise<void> {
  const records = typeof text === 'string' ? decodePreparedTokens(text) : text;
  for (const record of records) {
    const result = await store.importKey(record);
    if (result === 'imported') logger.info({ keyId: record.id }, 'Imported prepared token');
    else logger.info({ keyId: record.id }, 'Prepared token already present, skipped');
  }
}
