/** Longest `{n+}\r\n` looked for at a line end (20 digits is beyond any size). */
const TAIL = 26;
const EMPTY = Buffer.alloc(0);

/**
 * Follows a piped upstream's IMAP output just far enough to know whether the
 * next byte would start a line, outside any literal: the only place a
 * `* BYE` of ours may go. Literal bytes are skipped by count and line ends
 * are read as bytes, so a large FETCH costs a few steps per message, with no
 * strings made.
 */
export class ImapLineBoundary {
  private literalLeft = 0;
  /** The last bytes of a line that continues into the next chunk. */
  private tail: Buffer = EMPTY;
  private lineStart = true;

  /** True when everything fed so far ends a line (and no literal is open). */
  get atLineStart(): boolean {
    return this.lineStart;
  }

  feed(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.literalLeft > 0) {
        const take = Math.min(this.literalLeft, chunk.length - i);
        this.literalLeft -= take;
        i += take;
        this.lineStart = false;
        continue;
      }
      const nl = chunk.indexOf(10, i);
      if (nl < 0) {
        const rest = chunk.subarray(Math.max(i, chunk.length - TAIL));
        this.tail = this.tail.length === 0 ? Buffer.from(rest) : Buffer.concat([this.tail, rest]).subarray(-TAIL);
        this.lineStart = false;
        return;
      }
      let literal: number;
      if (this.tail.length > 0 && nl - i < TAIL) {
        // The line's end straddles the chunk boundary (rare): read it whole.
        const line = Buffer.concat([this.tail, chunk.subarray(i, nl + 1)]);
        literal = literalBefore(line, line.length - 1, 0);
      } else {
        literal = literalBefore(chunk, nl, i);
      }
      this.tail = EMPTY;
      this.literalLeft = Math.max(0, literal);
      this.lineStart = literal < 0;
      i = nl + 1;
    }
  }
}

/** The size a line ending at `buf[nl]` (`\n`) announces as `{n}\r\n` or `{n+}\r\n`; -1 when it announces none. */
function literalBefore(buf: Buffer, nl: number, start: number): number {
  let j = nl - 1;
  if (j < start || buf[j] !== 0x0d) return -1;
  if (--j < start || buf[j] !== 0x7d) return -1; // }
  j--;
  if (j >= start && buf[j] === 0x2b) j--; // + (LITERAL+)
  let n = 0;
  let digits = 0;
  for (let unit = 1; j >= start && buf[j]! >= 0x30 && buf[j]! <= 0x39 && digits < 20; j--, digits++, unit *= 10) n += (buf[j]! - 0x30) * unit;
  return digits > 0 && j >= start && buf[j] === 0x7b ? n : -1; // {
}
