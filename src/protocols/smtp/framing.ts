import { CrlfFramer } from '../crlf-framer.js';
import type { Frame } from '../line-session.js';

const LF = 0x0a;
const CR = 0x0d;
const DOT = 0x2e;
/** Message bytes held while the relay is slower than the client. */
const DATA_BUFFER = 64 * 1024;

/**
 * SMTP framing: command lines as every CRLF protocol, and after `startData()`
 * the message of a DATA command (RFC 5321 §4.5.2) as `data` frames, dot-
 * unstuffed, until the `dataEnd` frame of its `CRLF . CRLF`; then command
 * lines again (a client may pipeline the next command behind the dot).
 *
 * The end of the message is only ever `CRLF . CRLF`: a bare LF, or a dot
 * after one, is message text (the SMTP smuggling attack lives in servers that
 * disagree on this; the relay normalises line ends before they go upstream).
 * Message lines are not bounded here — they are passed on as they arrive, so
 * nothing is held but a few bytes of a line start; the message size limit
 * bounds the whole.
 */
export class SmtpFramer extends CrlfFramer {
  private inData = false;
  /** The next message byte starts a line (right after DATA, and after each CRLF). */
  private lineStart = true;
  /** The last message byte passed on was CR (a CRLF may be split across chunks). */
  private lastCr = false;
  /** The end of the message was read; its frame is next. */
  private endPending = false;

  /** The DATA command was accepted: what follows is the message. */
  startData(): void {
    this.inData = true;
    this.lineStart = true;
    this.lastCr = false;
  }

  override next(mode: 'command' | 'line' = 'command'): Frame | null {
    return this.inData ? this.nextData() : super.next(mode);
  }

  /** In DATA, message bytes are passed on as they come; reading pauses only while the relay cannot take more. */
  override get pauseAbove(): number {
    return this.inData ? DATA_BUFFER : super.pauseAbove;
  }

  private nextData(): Frame | null {
    if (this.endPending) {
      this.endPending = false;
      this.inData = false;
      return { kind: 'dataEnd' };
    }
    const buf = this.buf;
    if (buf === null) return null;
    const parts: Buffer[] = [];
    let from = 0;
    let i = 0;
    let end = -1;
    while (i < buf.length) {
      if (this.lineStart && buf[i] === DOT) {
        // `.` CR LF ends the message; any other line starting with a dot loses that dot. Wait for the bytes that decide.
        if (i + 1 >= buf.length || (buf[i + 1] === CR && i + 2 >= buf.length)) break;
        if (buf[i + 1] === CR && buf[i + 2] === LF) {
          end = i;
          break;
        }
        if (i > from) parts.push(buf.subarray(from, i));
        from = i + 1;
      }
      const lf = buf.indexOf(LF, i);
      if (lf < 0) {
        this.lineStart = false;
        i = buf.length;
        break;
      }
      this.lineStart = lf > 0 ? buf[lf - 1] === CR : this.lastCr;
      i = lf + 1;
    }
    const stop = end >= 0 ? end : i;
    if (stop > from) parts.push(buf.subarray(from, stop));
    if (stop > 0) this.lastCr = buf[stop - 1] === CR;
    const rest = end >= 0 ? end + 3 : i;
    this.buf = rest < buf.length ? buf.subarray(rest) : null;
    // The end comes as a frame of its own, after the message bytes before it.
    if (end >= 0) this.endPending = true;
    if (parts.length === 0) return end >= 0 ? this.nextData() : null;
    return { kind: 'data', raw: parts.length === 1 ? parts[0]! : Buffer.concat(parts) };
  }
}
