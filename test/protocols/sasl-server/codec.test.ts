import { describe, expect, it } from 'vitest';
import { failLine, handshake, okLine, parseClientLine, tabEscape, tabUnescape, type ClientLine } from '../../../src/protocols/sasl-server/codec.js';

const T = '\t';
const params = { service: null, rip: null, secured: false, resp: undefined };

describe('parseClientLine', () => {
  const good: Array<[string, string, ClientLine]> = [
    ['VERSION', `VERSION${T}1${T}0`, { command: 'VERSION', major: 1, minor: 0 }],
    ['CPID', `CPID${T}4242`, { command: 'CPID', pid: 4242 }],
    [
      'AUTH as Postfix sends it',
      `AUTH${T}1${T}PLAIN${T}service=smtp${T}nologin${T}lip=127.0.0.1${T}rip=192.0.2.7${T}secured${T}resp=AGFAYi5jAGtn`,
      { command: 'AUTH', id: 1, mechanism: 'PLAIN', params: { service: 'smtp', rip: '192.0.2.7', secured: true, resp: 'AGFAYi5jAGtn' } },
    ],
    [
      'AUTH as Exim sends it (secured before rip, no resp)',
      `AUTH${T}7${T}LOGIN${T}service=smtp${T}secured${T}rip=::1${T}lip=::1${T}nologin`,
      { command: 'AUTH', id: 7, mechanism: 'LOGIN', params: { service: 'smtp', rip: '::1', secured: true, resp: undefined } },
    ],
    ['AUTH with secured=tls (2.4) and unknown parameters', `AUTH${T}2${T}XOAUTH2${T}secured=tls${T}x-future=1${T}debug`, { command: 'AUTH', id: 2, mechanism: 'XOAUTH2', params: { ...params, secured: true } }],
    ['AUTH with an empty initial response, which is none (as Exim sends it)', `AUTH${T}3${T}LOGIN${T}resp=`, { command: 'AUTH', id: 3, mechanism: 'LOGIN', params }],
    ['AUTH with a tab-escaped value', `AUTH${T}4${T}PLAIN${T}service=sm\x01ttp`, { command: 'AUTH', id: 4, mechanism: 'PLAIN', params: { ...params, service: 'sm\ttp' } }],
    ['AUTH with the largest id', `AUTH${T}4294967295${T}PLAIN`, { command: 'AUTH', id: 4294967295, mechanism: 'PLAIN', params }],
    ['CONT', `CONT${T}9${T}YWJj`, { command: 'CONT', id: 9, response: 'YWJj' }],
    ['CONT with the empty response', `CONT${T}9${T}`, { command: 'CONT', id: 9, response: '' }],
  ];
  for (const [name, line, parsed] of good) {
    it(`parses ${name}`, () => {
      expect(parseClientLine(line)).toEqual(parsed);
    });
  }

  const bad: Array<[string, string]> = [
    ['an unknown command', `FOO${T}1`],
    ['a lower-case command', `auth${T}1${T}PLAIN`],
    ['an empty line', ''],
    ['VERSION without minor', `VERSION${T}1`],
    ['VERSION with words', `VERSION${T}one${T}two`],
    ['CPID without pid', 'CPID'],
    ['AUTH without mechanism', `AUTH${T}1`],
    ['AUTH with id 0', `AUTH${T}0${T}PLAIN`],
    ['AUTH with a leading zero', `AUTH${T}01${T}PLAIN`],
    ['AUTH with a negative id', `AUTH${T}-1${T}PLAIN`],
    ['AUTH with an id past 2^32-1', `AUTH${T}4294967296${T}PLAIN`],
    ['AUTH with a mechanism name of spaces', `AUTH${T}1${T}PL AIN`],
    ['AUTH with an empty parameter', `AUTH${T}1${T}PLAIN${T}${T}service=smtp`],
    ['AUTH with too many parameters', `AUTH${T}1${T}PLAIN${T}${Array(65).fill('nologin').join(T)}`],
    ['CONT without response field', `CONT${T}1`],
    ['CONT with two response fields', `CONT${T}1${T}YQ==${T}YQ==`],
    ['CONT with id 0', `CONT${T}0${T}YQ==`],
  ];
  for (const [name, line] of bad) {
    it(`refuses ${name}`, () => {
      expect(parseClientLine(line)).toBeNull();
    });
  }
});

describe('server lines', () => {
  it('sends the handshake in the order Dovecot does, every mechanism marked plaintext', () => {
    expect(handshake({ mechanisms: ['PLAIN', 'LOGIN'], spid: 12, cuid: 3, cookie: 'ab'.repeat(16) })).toBe(
      `VERSION${T}1${T}2\nMECH${T}PLAIN${T}plaintext\nMECH${T}LOGIN${T}plaintext\nSPID${T}12\nCUID${T}3\nCOOKIE${T}${'ab'.repeat(16)}\nDONE\n`,
    );
  });

  it('answers OK with user=, FAIL with one reason per kind', () => {
    expect(okLine(5, 'alice@example.com')).toBe(`OK${T}5${T}user=alice@example.com\n`);
    expect(failLine(5, 'refused', 'alice@example.com')).toBe(`FAIL${T}5${T}user=alice@example.com${T}reason=Authentication failed\n`);
    expect(failLine(5, 'temporary', null)).toBe(`FAIL${T}5${T}code=temp_fail${T}temp${T}reason=Temporary authentication failure, try again later\n`);
  });

  it('tab-escapes what it writes, so a name cannot add a field or a line', () => {
    expect(okLine(1, 'a\tb\nc')).toBe(`OK${T}1${T}user=a\x01tb\x01nc\n`);
    for (const text of ['plain', 'a\tb', 'x\x01y', 'nul\0', 'cr\rlf\n', '\x01\x01t']) expect(tabUnescape(tabEscape(text))).toBe(text);
  });
});
