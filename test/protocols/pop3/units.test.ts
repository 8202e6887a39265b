import { describe, expect, it } from 'vitest';
import { parseCommand } from '../../../src/protocols/pop3/dispatcher.js';
import { Pop3Framer } from '../../../src/protocols/pop3/framing.js';

const text = (f: Pop3Framer): string | null | undefined => {
  const frame = f.next();
  return frame === null ? null : frame.kind === 'command' ? frame.raw.toString() : undefined;
};
const LINE_TOO_LONG = { kind: 'fatal', reason: 'line_too_long' };
import { COMMANDS } from '../../../src/protocols/pop3/registry.js';

describe('Pop3Framer', () => {
  it('splits CRLF and bare LF lines, across chunks', () => {
    const f = new Pop3Framer(100);
    f.push(Buffer.from('CAPA\r\nUSER a'));
    expect(text(f)).toBe('CAPA');
    expect(f.next()).toBeNull();
    f.push(Buffer.from('@b\r'));
    expect(f.next()).toBeNull();
    f.push(Buffer.from('\nQUIT\n'));
    expect(text(f)).toBe('USER a@b');
    expect(text(f)).toBe('QUIT');
    expect(f.next()).toBeNull();
    expect(f.buffered).toBe(0);
  });

  it('reports a line over the limit, with or without its line end', () => {
    const f = new Pop3Framer(8);
    f.push(Buffer.from('12345678\r\n'));
    expect(text(f)).toBe('12345678');
    f.push(Buffer.from('123456789\r\n'));
    expect(f.next()).toEqual(LINE_TOO_LONG);
    const g = new Pop3Framer(8);
    g.push(Buffer.from('1234567890'));
    expect(g.next()).toEqual(LINE_TOO_LONG);
  });

  it('hands back or drops what is buffered', () => {
    const f = new Pop3Framer(100);
    f.push(Buffer.from('PASS x\r\nSTAT\r\nLI'));
    expect(text(f)).toBe('PASS x');
    expect(f.takeRest()?.toString()).toBe('STAT\r\nLI');
    expect(f.next()).toBeNull();
    f.push(Buffer.from('CAPA\r\n'));
    f.discard();
    expect(f.next()).toBeNull();
  });
});

describe('POP3 command registry', () => {
  it('parses the command name case-insensitively and keeps the arguments as sent', () => {
    expect(parseCommand('pass  my key ')).toEqual({ name: 'PASS', args: ' my key ' });
    expect(parseCommand('capa')).toEqual({ name: 'CAPA', args: '' });
  });

  it('holds one module per command, each with its states', () => {
    for (const name of ['CAPA', 'STLS', 'USER', 'PASS', 'AUTH', 'QUIT', 'NOOP', 'STAT', 'LIST', 'RETR', 'DELE', 'RSET', 'TOP', 'UIDL']) {
      const c = COMMANDS.get(name);
      expect(c?.name).toBe(name);
      expect(c?.states.length).toBeGreaterThan(0);
    }
    expect(COMMANDS.get('STLS')?.states).toEqual(['authorization']);
    expect(COMMANDS.get('STAT')?.states).toEqual(['transaction']);
  });
});
