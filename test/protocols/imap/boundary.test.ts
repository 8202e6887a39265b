import { describe, expect, it } from 'vitest';
import { ImapLineBoundary } from '../../../src/protocols/imap/boundary.js';

const body = 'Subject: x\r\n\r\nA line that ends like a literal {12}\r\n* BYE not a real line\r\n';
const stream = `* 1 FETCH (UID 7 BODY[] {${Buffer.byteLength(body)}}\r\n${body})\r\n* 2 FETCH (BODY[] {0}\r\n)\r\na OK FETCH done\r\n`;

/** Where in `stream` a BYE could go: after each line end outside a literal. */
function boundaries(): Set<number> {
  const literalStart = stream.indexOf('\r\n') + 2;
  const literalEnd = literalStart + Buffer.byteLength(body);
  return new Set([literalEnd + 3, stream.indexOf('a OK'), stream.length]);
}

describe('IMAP line boundary of a piped upstream', () => {
  it('knows, at every byte, whether a line just ended outside a literal', () => {
    const b = new ImapLineBoundary();
    const expected = boundaries();
    for (let i = 1; i <= stream.length; i++) {
      b.feed(Buffer.from(stream.slice(i - 1, i), 'latin1'));
      expect(b.atLineStart, `after ${i} bytes: ${JSON.stringify(stream.slice(Math.max(0, i - 12), i))}`).toBe(expected.has(i));
    }
  });

  it('gives the same answers whatever the chunking', () => {
    const expected = boundaries();
    for (let size = 2; size <= 40; size++) {
      const b = new ImapLineBoundary();
      for (let i = 0; i < stream.length; i += size) {
        const end = Math.min(stream.length, i + size);
        b.feed(Buffer.from(stream.slice(i, end), 'latin1'));
        expect(b.atLineStart, `chunks of ${size}, after ${end}`).toBe(expected.has(end));
      }
    }
  });

  it('handles {n+} (LITERAL+) and a literal announced across two chunks', () => {
    const b = new ImapLineBoundary();
    b.feed(Buffer.from('* 3 FETCH (BODY[] {1'));
    b.feed(Buffer.from('0+}\r\n0123456789'));
    expect(b.atLineStart).toBe(false);
    b.feed(Buffer.from(')\r\n'));
    expect(b.atLineStart).toBe(true);
  });
});
