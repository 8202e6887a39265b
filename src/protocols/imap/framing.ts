import type { FatalReason, Frame, Framer } from '../line-session.js';

/**
 * IMAP line framing: turns the byte stream into whole commands (lines plus
 * the literals they announce) or, while AUTHENTICATE waits for the client,
 * single continuation lines. Every bound is checked here, before anything is
 * buffered beyond it: a line longer than `lineLength` is fatal; a literal is
 * sized from its `{n}` / `{n+}` marker before any of its bytes are accepted —
 * a too-large synchronizing literal is refused before the server sends `+`,
 * a too-large non-synchronizing one (whose bytes are already on the way) is fatal.
 */

export interface FramingLimits {
  lineLength: number;
  literalSize: number;
}

const CRLF = Buffer.from('\r\n');
const LF = 0x0a;
const CR = 0x0d;
const OPEN = 0x7b; // {
const CLOSE = 0x7d; // }
const PLUS = 0x2b;
/** Digits we accept in a literal size; more than this is larger than any limit anyway. */
const MAX_SIZE_DIGITS = 12;

/** Reads `{123}` or `{123+}` at the end of a line; null when the line does not end in a literal marker. */
export function literalMarker(line: Buffer): { size: number; nonSync: boolean } | null {
  const end = line.length - 1;
  if (end < 2 || line[end] !== CLOSE) return null;
  let i = end - 1;
  const nonSync = line[i] === PLUS;
  if (nonSync) i--;
  const lastDigit = i;
  while (i >= 0 && line[i]! >= 0x30 && line[i]! <= 0x39) i--;
  const digits = lastDigit - i;
  if (digits === 0 || i < 0 || line[i] !== OPEN) return null;
  // A size too long to parse is reported as infinitely large, so it is refused, not misread.
  const size = digits > MAX_SIZE_DIGITS ? Number.POSITIVE_INFINITY : Number(line.toString('latin1', i + 1, lastDigit + 1));
  return { size, nonSync };
}

/**
 * Pull-based framer: `push()` what the socket delivers, then call `next()`
 * until it returns null. Holds no buffer while the connection is idle.
 */
export class ImapFramer implements Framer {
  private buf: Buffer | null = null;
  /** Bytes at the start of `buf` already searched for LF. */
  private scanned = 0;
  /** Earlier lines and literals of a command that announced literals. */
  private parts: Buffer[] | null = null;
  private partsBytes = 0;
  /** Bytes of the current literal still to come. */
  private literalLeft = 0;

  constructor(private readonly limits: FramingLimits) {}

  /** The most one command (its lines and literals together) may take. */
  get commandLimit(): number {
    return this.limits.lineLength + this.limits.literalSize;
  }

  /** Unconsumed input, bytes. */
  get buffered(): number {
    return (this.buf?.length ?? 0) + this.partsBytes;
  }

  /** Up to two whole commands may wait before reading pauses. */
  get pauseAbove(): number {
    return this.commandLimit * 2;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.buf = this.buf === null ? chunk : Buffer.concat([this.buf, chunk]);
  }

  /** Drops everything received so far, including a partial command (after STARTTLS: no command may cross the upgrade). */
  discard(): void {
    this.buf = null;
    this.scanned = 0;
    this.parts = null;
    this.partsBytes = 0;
    this.literalLeft = 0;
  }

  /** Hands over the unconsumed input (to a backend the session is piped to) and empties the framer. */
  takeRest(): Buffer | null {
    const pending = this.parts ? Buffer.concat([...this.parts, ...(this.buf ? [this.buf] : [])]) : this.buf;
    this.discard();
    return pending && pending.length > 0 ? pending : null;
  }

  /** The next frame, or null when more input is needed. `mode: 'line'` reads one continuation line. */
  next(mode: 'command' | 'line' = 'command'): Frame | null {
    for (;;) {
      const buf = this.buf;
      if (this.literalLeft > 0) {
        if (buf === null || buf.length < this.literalLeft) return null;
        this.addPart(buf.subarray(0, this.literalLeft));
        this.consume(this.literalLeft);
        this.literalLeft = 0;
        continue;
      }
      if (buf === null) return null;
      const lf = buf.indexOf(LF, this.scanned);
      if (lf === -1) {
        this.scanned = buf.length;
        // One byte of slack for a CR that may precede the LF still to come.
        if (buf.length > this.limits.lineLength + 1) return this.fatal('line_too_long');
        return null;
      }
      const line = buf.subarray(0, lf > 0 && buf[lf - 1] === CR ? lf - 1 : lf);
      if (line.length > this.limits.lineLength) return this.fatal('line_too_long');
      this.consume(lf + 1);

      if (mode === 'line') return { kind: 'line', raw: line };

      const marker = literalMarker(line);
      if (marker === null) {
        if (this.parts === null) return { kind: 'command', raw: line };
        this.addPart(line);
        const raw = Buffer.concat(this.parts);
        this.parts = null;
        this.partsBytes = 0;
        return { kind: 'command', raw };
      }

      const total = this.partsBytes + line.length + CRLF.length + marker.size;
      const reason = marker.size > this.limits.literalSize ? 'literal_too_large' : total > this.commandLimit ? 'command_too_long' : null;
      if (reason !== null) {
        if (marker.nonSync) return this.fatal(reason);
        const head = this.parts ? Buffer.concat([...this.parts, line]) : line;
        this.parts = null;
        this.partsBytes = 0;
        return { kind: 'refused', reason, head };
      }
      this.addPart(line);
      this.addPart(CRLF);
      this.literalLeft = marker.size;
      if (!marker.nonSync) return { kind: 'literal', size: marker.size };
    }
  }

  private addPart(part: Buffer): void {
    (this.parts ??= []).push(part);
    this.partsBytes += part.length;
  }

  private consume(n: number): void {
    const buf = this.buf!;
    this.buf = n >= buf.length ? null : buf.subarray(n);
    this.scanned = 0;
  }

  private fatal(reason: FatalReason): Frame {
    this.discard();
    return { kind: 'fatal', reason };
  }
}
