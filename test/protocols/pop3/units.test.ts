import { describe, expect, it } from 'vitest';
import { parseCommand } from '../../../src/protocols/pop3/dispatcher.js';
import { LINE_TOO_LONG, LineFramer } from '../../../src/protocols/pop3/framing.js';
import { COMMANDS } from '../../../src/protocols/pop3/registry.js';

describe('POP3 LineFramer', () => {
  it('splits CRLF and bare LF lines, across chunks', () => {
    const f = new LineFramer(100);
    f.push(Buffer.from('CAPA\r\nUSER a'));
    expect(f.next()?.toString()).toBe('CAPA');
    expect(f.next()).toBeNull();
    f.push(Buffer.from('@b\r'));
    expect(f.next()).toBeNull();
    f.push(Buffer.from('\nQUIT\n'));
    expect(f.next()?.toString()).toBe('USER a@b');
    expect(f.next()?.toString()).toBe('QUIT');
    expect(f.next()).toBeNull();
    expect(f.buffered).toBe(0);
  });

  it('reports a line over the limit, with or without its line end', () => {
    const f = new LineFramer(8);
    f.push(Buffer.from('12345678\r\n'));
    expect(f.next()?.toString()).toBe('12345678');
    f.push(Buffer.from('123456789\r\n'));
    expect(f.next()).toBe(LINE_TOO_LONG);
    const g = new LineFramer(8);
    g.push(Buffer.from('1234567890'));
    expect(g.next()).toBe(LINE_TOO_LONG);
  });

  it('hands back or drops what is buffered', () => {
    const f = new LineFramer(100);
    f.push(Buffer.from('PASS x\r\nSTAT\r\nLI'));
    expect(f.next()?.toString()).toBe('PASS x');
    expect(f.takeRest().toString()).toBe('STAT\r\nLI');
    expect(f.next()).toBeNull();
    f.push(Buffer.from('CAPA\r\n'));
    f.clear();
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
