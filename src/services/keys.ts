import { isValidCidr } from '../keys/cidr.js';
import { decodeExport, encodeExport } from '../keys/export-codec.js';
import { hashKey, isWellFormedKey } from '../keys/format.js';
import { keyNameProblem } from '../keys/names.js';
import { newKey } from '../keys/new-key.js';
import type { Grantor } from '../keys/policy.js';
import { looksLikeAddress, normalizeAddress, type KeyRecord } from '../keys/record.js';
import { normalizeScopes } from '../keys/scopes.js';
import type { Logger } from '../log.js';
import { parseSendingLimits } from '../limits/sending-limits.js';
import { NotFoundError } from '../store/errors.js';
import type { KeyStore } from '../store/types.js';
import { createGrantedKey, importGrantedKey } from './key-writes.js';

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
  /** The key's name. */
  name?: string;
  /** The reference workflow's word for the name (`tokens issue -d`, /api/tokens bodies): give one of the two. */
  description?: string;
  scopes: readonly string[];
  account?: string | null;
  expiresAt?: string | null;
  allowedIps?: readonly string[] | null;
  platform?: string | null;
  deviceId?: string | null;
  /** A canary key (grants nothing; every use is raised). */
  canary?: boolean;
  /** SMTP sending limits, checked here (InputError naming the field). */
  limits?: unknown;
}

/**
 * Validates input, asks the policy whether `grantor` may grant such a key
 * (GrantError if not), then stores it. The returned `key` is the only copy of the secret.
 */
export async function issueKey(store: KeyStore, grantor: Grantor, input: IssueInput, now = new Date()): Promise<{ key: string; record: KeyRecord }> {
  const name = nameOrDescription(input);
  const scopes = normalizeScopes(input.scopes.length ? input.scopes : ['*']);
  const account = input.account ? normalizeAddress(input.account) : null;
  if (account !== null && !looksLikeAddress(account)) throw new InputError('not an address such as user@example.com', 'account');
  if (input.expiresAt && Date.parse(input.expiresAt) <= now.getTime()) throw new InputError('expiry is in the past', 'expiresAt');
  (input.allowedIps ?? []).forEach((c, i) => {
    if (!isValidCidr(c)) throw new InputError(`entry ${i + 1} is not an IP address or CIDR range`, 'allowedIps');
  });
  const limits = parseSendingLimits(input.limits);
  if ('problem' in limits) throw new InputError(limits.problem, 'limits');
  const made = newKey(
    {
      name,
      account,
      scopes,
      expiresAt: input.expiresAt ? new Date(input.expiresAt).toISOString() : null,
      allowedIps: input.allowedIps?.length ? [...input.allowedIps] : null,
      platform: input.platform ?? null,
      deviceId: input.deviceId ?? null,
      canary: input.canary === true,
      limits: limits.limits,
    },
    now,
  );
  await createGrantedKey(store, grantor, made.record);
  return made;
}

/** The name, given as `name` or as its alias `description`; InputError naming the field used. */
function nameOrDescription(input: Pick<IssueInput, 'name' | 'description'>): string {
  if (input.name !== undefined && input.description !== undefined && input.name !== input.description) {
    throw new InputError('give name or description (the same thing), not both', 'description');
  }
  if (input.name !== undefined) return checkKeyName(input.name, 'name');
  if (input.description !== undefined) return checkKeyName(input.description, 'description');
  throw new InputError('name is required', 'name');
}

/** The trimmed name, or InputError naming `field` (the name, or its alias). */
export function checkKeyName(raw: string, field = 'name'): string {
  const name = raw.trim();
  const problem = keyNameProblem(name);
  if (problem) throw new InputError(`${field} ${problem}`, field);
  return name;
}

/** Finds a key by its value (hashed, never stored) or by its id. */
export async function findKey(store: KeyStore, keyOrId: string): Promise<KeyRecord> {
  const t = keyOrId.trim();
  const rec = isWellFormedKey(t) ? await store.findByHash(hashKey(t)) : await store.getKey(t);
  if (!rec) throw new NotFoundError('key');
  return rec;
}

export async function exportKey(store: KeyStore, keyOrId: string): Promise<string> {
  return encodeExport(await findKey(store, keyOrId));
}

/** Imports an exported record, if `grantor` could have issued it (GrantError otherwise). */
export async function importExportedKey(store: KeyStore, grantor: Grantor, blob: string): Promise<{ result: 'imported' | 'exists'; record: KeyRecord }> {
  const record = decodeExport(blob);
  return { result: await importGrantedKey(store, grantor, record), record };
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
 * The operator's own act (the setting comes from their environment or config
 * file), so no key's grant limits it.
 */
export async function importPreparedTokens(store: KeyStore, text: string | KeyRecord[], logger: Logger): Promise<void> {
  const records = typeof text === 'string' ? decodePreparedTokens(text) : text;
  for (const record of records) {
    const result = await importGrantedKey(store, 'operator', record);
    if (result === 'imported') logger.info({ keyId: record.id }, 'Imported prepared token');
    else logger.info({ keyId: record.id }, 'Prepared token already present, skipped');
  }
}
