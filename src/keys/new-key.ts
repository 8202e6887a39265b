import { randomUUID } from 'node:crypto';
import { generateKey, hashKey } from './format.js';
import { normalizeAddress, type KeyRecord, type SendingLimits } from './record.js';
import type { Scope } from './scopes.js';

export interface NewKeyInput {
  name: string;
  account?: string | null;
  scopes: Scope[];
  expiresAt?: string | null;
  allowedIps?: string[] | null;
  platform?: string | null;
  deviceId?: string | null;
  rotatedFrom?: string | null;
  canary?: boolean;
  limits?: SendingLimits | null;
}

/** Makes a fresh key and its record. The returned `key` is the only copy of the secret. */
export function newKey(input: NewKeyInput, now: Date = new Date()): { key: string; record: KeyRecord } {
  const key = generateKey();
  const record: KeyRecord = {
    id: randomUUID(),
    hash: hashKey(key),
    name: input.name,
    account: input.account ? normalizeAddress(input.account) : null,
    scopes: input.scopes,
    createdAt: now.toISOString(),
    expiresAt: input.expiresAt ?? null,
    allowedIps: input.allowedIps ?? null,
    revokedAt: null,
    lastUsedAt: null,
    lastUsedIp: null,
    lastUsedProtocol: null,
    platform: input.platform ?? null,
    deviceId: input.deviceId ?? null,
    rotatedFrom: input.rotatedFrom ?? null,
    canary: input.canary === true,
    limits: input.limits ?? null,
  };
  return { key, record };
}
