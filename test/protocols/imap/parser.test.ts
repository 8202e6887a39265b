import { describe, expect, it } from 'vitest';
import { ImapSyntaxError, parseCommand, peekTag } from '../../../src/protocols/imap/parser.js';

const parse = (s: string) => parseCommand(Buffer.from(s, 'utf8'));

describe('parseCommand', () => {
  it('reads tag, upper-cased name and atom arguments', () => {
    expect(parse('a1 login alice@example.com kg_x')).toEqual({
      tag: 'a1',
      name: 'LOGIN',
      args: [
        { type: 'atom', value: 'alice@example.com' },
        { type: 'atom', value: 'kg_x' },
      ],
    });
  });

  it('reads quoted strings with escapes and UTF-8', () => {
    expect(parse('a LOGIN "al\\"ice" "p\\\\w ö"').args).toEqual([
      { type: 'string', value: 'al"ice', literal: false },
      { type: 'string', value: 'p\\w ö', literal: false },
    ]);
  });

  it('reads synchronizing and non-synchronizing literals', () => {
    expect(parse('a LOGIN {5}\r\nalice {3+}\r\nk y').args).toEqual([
      { type: 'string', value: 'alice', literal: true },
      { type: 'string', value: 'k y', literal: true },
    ]);
  });

  it('reads nested lists and NIL', () => {
    expect(parse('a ID ("name" "x" "version" NIL)').args).toEqual([
      {
        type: 'list',
        items: [
          { type: 'string', value: 'name', literal: false },
          { type: 'string', value: 'x', literal: false },
          { type: 'string', value: 'version', literal: false },
          { type: 'atom', value: 'NIL' },
        ],
      },
    ]);
    expect(parse('a ID NIL').args).toEqual([{ type: 'atom', value: 'NIL' }]);
    expect(parse('a ID ()').args).toEqual([{ type: 'list', items: [] }]);
  });

  it('tolerates one trailing space', () => {
    expect(parse('a NOOP ').args).toEqual([]);
  });

  it.each([
    ['', null, 'Empty command'],
    ['a', 'a', 'Missing command'],
    ['+ NOOP', null, 'Invalid tag'],
    ['* NOOP', null, 'Invalid tag'],
    ['\x00\x01\xff', null, 'Invalid tag'],
    ['a NO\x01OP', 'a', 'Invalid command name'],
    ['a LOGIN "unterminated', 'a', 'Unterminated quoted string'],
    ['a LOGIN "bad\\escape"', 'a', 'Invalid escape in quoted string'],
    ['a LOGIN {5}\r\nab', 'a', 'Truncated literal'],
    ['a ID ("x"', 'a', 'Unterminated list'],
    ['a ID ((((((((((x))))))))))', 'a', 'Lists nested too deeply'],
    ['a LOGIN x\x01y', 'a', 'Expected a space'],
  ])('refuses %j', (input, tag, message) => {
    let caught: unknown;
    try {
      parseCommand(Buffer.from(input, 'latin1'));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ImapSyntaxError);
    expect(caught).toMatchObject({ tag, message });
  });
});

describe('helpers', () => {
  it('peekTag reads only a valid tag', () => {
    expect(peekTag(Buffer.from('a12 LOGIN {99}'))).toBe('a12');
    expect(peekTag(Buffer.from('bad+tag X'))).toBeNull();
    expect(peekTag(Buffer.from(''))).toBeNull();
  });
});
