import type { Protocol, Scope } from './scopes.js';

/** A key as stored. The raw key is never part of it: only its SHA-256 `hash`. */
export interface KeyRecord {
  id: string;
  hash: string;
  name: string;
  /** Canonical account address the key is bound to; null = unbound. */
  account: string | null;
  scopes: Scope[];
  createdAt: string;
  expiresAt: string | null;
  /** CIDR list; null = any address. */
  allowedIps: string[] | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
  lastUsedIp: string | null;
  lastUsedProtocol: string | null;
  platform: string | null;
  deviceId: string | null;
  /** Id of the key this one replaced by rotation. */
  rotatedFrom: string | null;
  /**
   * A canary grants nothing: it is planted where a thief would find it, and
   * every use is refused like a wrong key and raised (`key.canary_used`).
   * Stores always return it; absent on a record made elsewhere = false.
   */
  canary?: boolean;
  /** SMTP sending limits; null or absent = none. */
  limits?: SendingLimits | null;
}

/** Per-key SMTP sending limits (src/limits/sending.ts); an absent field is no limit. */
export interface SendingLimits {
  messagesPerHour?: number;
  recipientsPerMessage?: number;
  recipientsPerDay?: number;
}

export interface AccountRecord {
  /** Canonical address, lowercase. */
  address: string;
  /** Further addresses that log in as this account, lowercase. */
  aliases: string[];
  displayName: string | null;
  disabled: boolean;
  createdAt: string;
  /** Reserved for upstream routing (proxy backends); opaque to the store. */
  upstream: Record<string, unknown> | null;
}

export interface KeyUse {
  at: string;
  ip: string | null;
  protocol: Protocol | 'http' | null;
}

export function isActive(key: KeyRecord, now: Date = new Date()): boolean {
  return key.revokedAt === null && (key.expiresAt === null || Date.parse(key.expiresAt) > now.getTime());
}

/** Canonical form of an address: trimmed and lowercased. */
export function normalizeAddress(address: string): string {
  return address.trim().toLowerCase();
}

/** The loose check every entrance applies to an account address (canonical or not): one "@", no spaces. */
export function looksLikeAddress(value: string): boolean {
  return /^[^\s@]+@[^\s@]+$/.test(value.trim());
}

/** Normalised, de-duplicated, without empties. */
export function uniqueAddresses(list: readonly string[]): string[] {
  return [...new Set(list.map(normalizeAddress))].filter((s) => s !== '');
}
