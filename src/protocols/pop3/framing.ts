import type { Frame, Framer } from '../line-session.js';

const LF = 0x0a;
const CR = 0x0d;

/**
 * POP3 line framing: turns the byte stream into CRLF-terminated lines (a bare
 * LF is accepted too, as most servers do). Bounded: a line longer than
 * `lineLength` bytes (CRLF excluded) is reported as soon as that many bytes
 * are buffered without a line end, so a client that never sends LF cannot
 * make the buffer grow. Pull-based: `push()` what the socket delivers, then
 * call `next()` until it returns null. Holds no buffer while the connection
 * is idle.
 */
export class Pop3Framer implements Framer {
  private buf: Buffer | null = null;
  /** Bytes at the start of `buf` already searched for LF. */
  private scanned = 0;

  constructor(private readonly lineLength: number) {}

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.buf = this.buf === null ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /** The next whole line without its line end (a command, or the continuation line asked for); null when more bytes are needed. */
  next(mode: 'command' | 'line' = 'command'): Frame | null {
    const buf = this.buf;
    if (buf === null) return null;
    const lf = buf.indexOf(LF, this.scanned);
    if (lf < 0) {
      this.scanned = buf.length;
      // One byte of slack for a CR whose LF is still on its way.
      return buf.length > this.lineLength + 1 ? this.fatal() : null;
    }
    const end = lf > 0 && buf[lf - 1] === CR ? lf - 1 : lf;
    if (end > this.lineLength) return this.fatal();
    const raw = buf.subarray(0, end);
    this.buf = lf + 1 < buf.length ? buf.subarray(lf + 1) : null;
    this.scanned = 0;
    return { kind: mode, raw };
  }

  /** Unconsumed bytes. */
  get buffered(): number {
    return this.buf?.length ?? 0;
  }

  /** A few pipelined lines may wait before reading pauses. */
  get pauseAbove(): number {
    return this.lineLength * 2;
  }

  takeRest(): Buffer | null {
    const rest = this.buf;
    this.discard();
    return rest;
  }

  discard(): void {
    this.buf = null;
    this.scanned = 0;
  }

  private fatal(): Frame {
    this.discard();
    return { kind: 'fatal', reason: 'line_too_long' };
  }
}
