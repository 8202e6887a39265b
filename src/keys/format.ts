import { createHash, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { base62FromRandom, encodeBase62 } from './base62.js';

/**
 * Key format: `kg_` + 43 random base62 characters (43 × log2(62) ≈ 256.03 bits)
 * + 6 base62 characters of CRC32 over everything before them. The checksum lets
 * typos and junk be refused without a store lookup and lets secret scanners
 * recognise a leaked Keygate key.
 */
export const KEY_PREFIX = 'kg_';
export const KEY_RANDOM_LENGTH = 43;
export const KEY_CHECKSUM_LENGTH = 6;
export const KEY_LENGTH = KEY_PREFIX.length + KEY_RANDOM_LENGTH + KEY_CHECKSUM_LENGTH;
export const KEY_RE = /^kg_[0-9A-Za-z]{49}$/;
/** Matches a key anywhere in a text, for log scrubbing and secret scanners. */
export const KEY_SCAN_RE = /kg_[0-9A-Za-z]{49}/g;

function checksum(body: string): string {
  return encodeBase62(crc32(body) >>> 0, KEY_CHECKSUM_LENGTH);
}

/** Makes a new random key. The caller shows it once and stores only its hash. */
export function generateKey(): string {
  const body = KEY_PREFIX + base62FromRandom(randomBytes, KEY_RANDOM_LENGTH);
  return body + checksum(body);
}

/** True when `candidate` has the key shape and a matching checksum. Pure; never touches a store. */
export function isWellFormedKey(candidate: string): boolean {
  if (candidate.length !== KEY_LENGTH || !KEY_RE.test(candidate)) return false;
  const body = candidate.slice(0, KEY_LENGTH - KEY_CHECKSUM_LENGTH);
  return checksum(body) === candidate.slice(KEY_LENGTH - KEY_CHECKSUM_LENGTH);
}

/** SHA-256 of the key, lowercase hex: the only form a key is ever stored in. */
export function hashKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export const HASH_RE = /^[0-9a-f]{64}$/;
