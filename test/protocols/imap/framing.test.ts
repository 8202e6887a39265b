import { describe, expect, it } from 'vitest';
import { ImapFramer, literalMarker } from '../../../src/protocols/imap/framing.js';
import type { Frame } from '../../../src/protocols/line-session.js';

const limits = { lineLength: 64, literalSize: 32 };

function frames(framer: ImapFramer, mode: 'command' | 'line' = 'command'): Frame[] {
  const out: Frame[] = [];
  for (let f = framer.next(mode); f !== null; f = framer.next(mode)) {
    out.push(f);
    if (f.kind === 'fatal') break;
  }
  return out;
}

const text = (f: Frame | null | undefined): string => (f && (f.kind === 'command' || f.kind === 'line') ? f.raw.toString('latin1') : `<${f?.kind}>`);

describe('literalMarker', () => {
  it('reads synchronizing and non-synchronizing markers', () => {
    expect(literalMarker(Buffer.from('a LOGIN {5}'))).toEqual({ size: 5, nonSync: false });
    expect(literalMarker(Buffer.from('a LOGIN {12+}'))).toEqual({ size: 12, nonSync: true });
    expect(literalMarker(Buffer.from('a LOGIN {0}'))).toEqual({ size: 0, nonSync: false });
  });

  it('ignores lines that only look similar', () => {
    for (const line of ['a LOGIN x', 'a {}', 'a {+}', 'a {5', 'a 5}', '{x}', 'a {5}x']) expect(literalMarker(Buffer.from(line))).toBeNull();
  });

  it('reads an absurdly long size as infinite rather than misparsing it', () => {
    expect(literalMarker(Buffer.from('a {99999999999999999999999}'))!.size).toBe(Number.POSITIVE_INFINITY);
  });
});

describe('ImapFramer', () => {
  it('splits pipelined commands, one frame per command, CRLF or bare LF', () => {
    const f = new ImapFramer(limits);
    f.push(Buffer.from('a NOOP\r\nb CAPABILITY\nc LOGOUT\r\nd NO'));
    expect(frames(f).map(text)).toEqual(['a NOOP', 'b CAPABILITY', 'c LOGOUT']);
    f.push(Buffer.from('OP\r\n'));
    expect(frames(f).map(text)).toEqual(['d NOOP']);
    expect(f.buffered).toBe(0);
  });

  it('asks for a synchronizing literal, then joins it into the command', () => {
    const f = new ImapFramer(limits);
    f.push(Buffer.from('a LOGIN {5}\r\n'));
    expect(frames(f)).toEqual([{ kind: 'literal', size: 5 }]);
    f.push(Buffer.from('al'));
    expect(frames(f)).toEqual([]);
    f.push(Buffer.from('ice {3}\r\n'));
    expect(frames(f)).toEqual([{ kind: 'literal', size: 3 }]);
    f.push(Buffer.from('k\r\ny\r\n'));
    expect(frames(f).map(text)).toEqual(['a LOGIN {5}\r\nalice {3}\r\nk\r\ny']);
  });

  it('reads non-synchronizing literals without a continuation', () => {
    const f = new ImapFramer(limits);
    f.push(Buffer.from('a LOGIN {5+}\r\nalice {3+}\r\nkey\r\nb NOOP\r\n'));
    expect(frames(f).map(text)).toEqual(['a LOGIN {5+}\r\nalice {3+}\r\nkey', 'b NOOP']);
  });

  it('refuses a too-large synchronizing literal before any of it is accepted, and carries on', () => {
    const f = new ImapFramer(limits);
    f.push(Buffer.from('a LOGIN {33}\r\nb NOOP\r\n'));
    const [refused, next] = frames(f);
    expect(refused).toMatchObject({ kind: 'refused', reason: 'literal_too_large' });
    expect(refused!.kind === 'refused' && refused!.head.toString()).toBe('a LOGIN {33}');
    expect(text(next)).toBe('b NOOP');
  });

  it('is fatal when a too-large literal is non-synchronizing (its bytes are already coming)', () => {
    const f = new ImapFramer(limits);
    f.push(Buffer.from('a LOGIN {33+}\r\n'));
    expect(frames(f)).toEqual([{ kind: 'fatal', reason: 'literal_too_large' }]);
    expect(f.buffered).toBe(0);
  });

  it('bounds a whole command, not only each literal', () => {
    const f = new ImapFramer({ lineLength: 40, literalSize: 30 });
    f.push(Buffer.from('a LOGIN {30}\r\n'));
    expect(frames(f)).toEqual([{ kind: 'literal', size: 30 }]);
    f.push(Buffer.from(`${'x'.repeat(30)} {30}\r\n`));
    expect(frames(f)).toEqual([expect.objectContaining({ kind: 'refused', reason: 'command_too_long' })]);
  });

  it('is fatal for a line longer than the limit, without waiting for its end', () => {
    const f = new ImapFramer(limits);
    f.push(Buffer.from(`a LOGIN ${'x'.repeat(100)}`));
    expect(frames(f)).toEqual([{ kind: 'fatal', reason: 'line_too_long' }]);
  });

  it('accepts a line of exactly the limit', () => {
    const f = new ImapFramer(limits);
    const line = `a ${'x'.repeat(62)}`;
    f.push(Buffer.from(`${line}\r\n`));
    expect(frames(f).map(text)).toEqual([line]);
  });

  it('reads continuation lines raw in line mode (no literal handling)', () => {
    const f = new ImapFramer(limits);
    f.push(Buffer.from('AGFsaWNl {5}\r\n*\r\n'));
    expect(frames(f, 'line').map(text)).toEqual(['AGFsaWNl {5}', '*']);
  });

  it('discards everything, including a half-read command (STARTTLS)', () => {
    const f = new ImapFramer(limits);
    f.push(Buffer.from('a LOGIN {5+}\r\nal'));
    expect(frames(f)).toEqual([]);
    f.discard();
    expect(f.buffered).toBe(0);
    f.push(Buffer.from('b NOOP\r\n'));
    expect(frames(f).map(text)).toEqual(['b NOOP']);
  });

  it('hands over unread input (to a backend)', () => {
    const f = new ImapFramer(limits);
    f.push(Buffer.from('a LOGIN x y\r\nb SELECT INBOX\r\nc FE'));
    expect(text(f.next())).toBe('a LOGIN x y');
    expect(f.takeRest()!.toString()).toBe('b SELECT INBOX\r\nc FE');
    expect(f.takeRest()).toBeNull();
  });
});
