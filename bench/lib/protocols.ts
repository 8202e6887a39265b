/**
 * What one connect → greeting → login → logout cycle looks like on the wire,
 * per protocol, as a list of steps: an optional line to send, and a verdict
 * on each line received ('wait' for more lines of a multi-line reply).
 * The same scripts drive Keygate, Dovecot and the canned baseline.
 */

import type { Protocol } from '../../src/keys/scopes.js';

export type BenchProtocol = Protocol;
export type Verdict = 'wait' | 'ok' | 'fail';

export interface Credentials {
  user: string;
  pass: string;
}

export interface Step {
  send?: (c: Credentials) => string;
  expect: (line: string) => Verdict;
}

export interface Script {
  steps: Step[];
  /** The login is timed from sending step `loginFrom` to the verdict of step `loginTo`. */
  loginFrom: number;
  loginTo: number;
}

const prefixed = (ok: string, more?: string) => (line: string): Verdict => (line.startsWith(ok) ? 'ok' : more !== undefined && line.startsWith(more) ? 'wait' : 'fail');
const tagged = (tag: string) => (line: string): Verdict => (line.startsWith(`${tag} OK`) ? 'ok' : line.startsWith(`${tag} `) ? 'fail' : line.startsWith('* ') ? 'wait' : 'fail');

export const SCRIPTS: Record<BenchProtocol, Script> = {
  imap: {
    steps: [
      { expect: prefixed('* OK') },
      { send: (c) => `a LOGIN ${c.user} ${c.pass}\r\n`, expect: tagged('a') },
      { send: () => 'b LOGOUT\r\n', expect: tagged('b') },
    ],
    loginFrom: 1,
    loginTo: 1,
  },
  pop3: {
    steps: [
      { expect: prefixed('+OK') },
      { send: (c) => `USER ${c.user}\r\n`, expect: prefixed('+OK') },
      { send: (c) => `PASS ${c.pass}\r\n`, expect: prefixed('+OK') },
      { send: () => 'QUIT\r\n', expect: prefixed('+OK') },
    ],
    loginFrom: 1,
    loginTo: 2,
  },
  smtp: {
    steps: [
      { expect: prefixed('220 ', '220-') },
      { send: () => 'EHLO bench.example\r\n', expect: prefixed('250 ', '250-') },
      { send: (c) => `AUTH PLAIN ${Buffer.from(`\0${c.user}\0${c.pass}`).toString('base64')}\r\n`, expect: prefixed('235') },
      { send: () => 'QUIT\r\n', expect: prefixed('221') },
    ],
    loginFrom: 2,
    loginTo: 2,
  },
};
