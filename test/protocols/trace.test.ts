import { describe, expect, it } from 'vitest';
import { maskCommand } from '../../src/protocols/trace.js';

/** The trace line of a client command: secrets masked by where they stand, whatever they look like. */
describe('maskCommand', () => {
  it.each([
    ['imap', 'a LOGIN alice@example.com hunter2', 'a LOGIN [REDACTED]'],
    ['imap', 'a login "alice" "hunter 2"', 'a login [REDACTED]'],
    ['imap', 'a LOGIN {5+}\r\nalice {7+}\r\nhunter2', 'a LOGIN [REDACTED]'],
    ['imap', 'LOGIN alice hunter2', 'LOGIN [REDACTED]'],
    ['imap', 'a AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI=', 'a AUTHENTICATE PLAIN [REDACTED]'],
    ['imap', 'a AUTHENTICATE PLAIN', 'a AUTHENTICATE PLAIN'],
    // Not a mechanism name where one belongs: it may be the secret itself.
    ['imap', 'a AUTHENTICATE AGFsaWNlAGh1bnRlcjI=', 'a AUTHENTICATE [REDACTED]'],
    ['imap', 'a SELECT INBOX', 'a SELECT INBOX'],
    ['pop3', 'PASS hunter 2', 'PASS [REDACTED]'],
    ['pop3', 'APOP alice c4c9334bac560ecc979e58001b3e22fb', 'APOP [REDACTED]'],
    ['pop3', 'USER alice@example.com', 'USER alice@example.com'],
    ['smtp', 'AUTH\tLOGIN\tYWxpY2U=', 'AUTH LOGIN [REDACTED]'],
    ['smtp', 'AUTH 12345678', 'AUTH [REDACTED]'],
    ['smtp', 'MAIL FROM:<alice@example.com>', 'MAIL FROM:<alice@example.com>'],
    ['sasl', 'AUTH\t1\tPLAIN\tservice=smtp\tresp=AGFsaWNlAGh1bnRlcjI=', 'AUTH 1 PLAIN [REDACTED]'],
    ['sasl', 'CONT\t7\taHVudGVyMg==', 'CONT 7 [REDACTED]'],
    ['sasl', 'VERSION\t1\t2', 'VERSION\t1\t2'],
  ] as const)('%s %j → %j', (protocol, line, shown) => {
    expect(maskCommand(protocol, line)).toBe(shown);
  });

  it('cuts a long line', () => {
    expect(maskCommand('imap', `a NOOP ${'x'.repeat(2000)}`)).toHaveLength(513);
  });
});
