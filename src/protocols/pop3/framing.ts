/**
 * POP3 line framing: turns the byte stream into CRLF-terminated lines (a bare
 * LF is accepted too, as most servers do). Bounded: a line longer than
 * `lineLength` bytes (CRLF excluded) is reported as soon as that many bytes
 * are buffered without a line end, so a client that never sends LF cannot
 * make the buffer grow.
 */

export const LINE_TOO_LONG = Symbol('line too long');

const LF = 0x0a;
const CR = 0x0d;

/**
 * Pull-based framer: `push()` what the socket delivers, then call `next()`
 * until it returns null. Holds no buffer while the connection is idle.
 */
export class LineFramer {
  private buf: Buffer | null = null;
  /** Bytes at the start of `buf` already searched for LF. */
  private scanned = 0;

  constructor(private readonly lineLength: number) {}

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.buf = this.buf === null ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /** The next whole line without its line end; null when more bytes are needed; LINE_TOO_LONG when the bound is crossed (fatal). */
  next(): Buffer | typeof LINE_TOO_LONG | null {
    const buf = this.buf;
    if (buf === null) return null;
    const lf = buf.indexOf(LF, this.scanned);
    if (lf < 0) {
      this.scanned = buf.length;
      // One byte of slack for a CR whose LF is still on its way.
      return buf.length > this.lineLength + 1 ? LINE_TOO_LONG : null;
    }
    const end = lf > 0 && buf[lf - 1] === CR ? lf - 1 : lf;
    if (end > this.lineLength) return LINE_TOO_LONG;
    const line = buf.subarray(0, end);
    this.buf = lf + 1 < buf.length ? buf.subarray(lf + 1) : null;
    this.scanned = 0;
    return line;
  }

  /** Unconsumed bytes, bytes. */
  get buffered(): number {
    return this.buf?.length ?? 0;
  }

  /** Removes and returns everything not yet framed (handed to a backend after login). */
  takeRest(): Buffer {
    const rest = this.buf ?? Buffer.alloc(0);
    this.clear();
    return rest;
  }

  /** Drops everything buffered (plaintext pipelined after STLS must never be taken for a command). */
  clear(): void {
    this.buf = null;
    this.scanned = 0;
  }
}
