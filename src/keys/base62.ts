const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Encodes a non-negative integer as base62, left-padded with '0' to `width`. */
export function encodeBase62(value: number, width: number): string {
  let out = '';
  let n = value;
  do {
    out = ALPHABET[n % 62] + out;
    n = Math.floor(n / 62);
  } while (n > 0);
  if (out.length > width) throw new RangeError(`value ${value} does not fit in ${width} base62 digits`);
  return out.padStart(width, '0');
}

/**
 * Turns random bytes into uniformly distributed base62 characters.
 * Bytes >= 248 are rejected so that `byte % 62` carries no bias.
 */
export function base62FromRandom(randomBytes: (n: number) => Buffer, length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248) out += ALPHABET[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
}
