import { describe, expect, it } from 'vitest';
import { generateKey, hashKey, isWellFormedKey, KEY_LENGTH, KEY_RE } from '../../src/keys/format.js';

describe('key format', () => {
  it('generates kg_ + 43 base62 + 6 checksum characters, all distinct', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const k = generateKey();
      expect(k).toMatch(KEY_RE);
      expect(k).toHaveLength(KEY_LENGTH);
      expect(k.startsWith('kg_')).toBe(true);
      expect(isWellFormedKey(k)).toBe(true);
      seen.add(k);
    }
    expect(seen.size).toBe(2000);
  });

  it('uses every base62 character in the random part (no bias towards a subset)', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 2000; i++) for (const c of generateKey().slice(3, 46)) counts.set(c, (counts.get(c) ?? 0) + 1);
    expect(counts.size).toBe(62);
    const values = [...counts.values()];
    // 86,000 draws over 62 symbols: ~1,387 each; a biased mapping would skew far beyond ±20 %.
    expect(Math.min(...values)).toBeGreaterThan(1387 * 0.8);
    expect(Math.max(...values)).toBeLessThan(1387 * 1.2);
  });

  it('refuses a single changed character through the checksum', () => {
    const k = generateKey();
    let refused = 0;
    for (let i = 3; i < k.length; i++) {
      const c = k[i] === 'a' ? 'b' : 'a';
      if (!isWellFormedKey(k.slice(0, i) + c + k.slice(i + 1))) refused++;
    }
    expect(refused).toBe(k.length - 3);
  });

  it('refuses wrong shapes', () => {
    const k = generateKey();
    for (const bad of ['', 'kg_', k.slice(0, -1), `${k}x`, k.replace('kg_', 'kh_'), k.replace(/.$/, '!'), ` ${k}`, k.toUpperCase(), 'f05d76644ea39c4a2ee33e7bffe55808b716a34b51d67b388c7d60498b0f89bc']) {
      expect(isWellFormedKey(bad)).toBe(false);
    }
  });

  it('hashes to lowercase SHA-256 hex, stable', () => {
    expect(hashKey('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});
