import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness } from '../helpers/keygate.js';
import { LineClient, plain } from '../helpers/line-client.js';

/*
 * limits.connectionsPerListener through each real mail listener: when a
 * listener is full, the oldest connection that has not logged in is closed
 * for the newcomer, and a logged-in session never is. The protocols tell the
 * listener when a login succeeds; this checks each of them does.
 */

const ALICE = 'alice@example.com';
let h: Harness;
let key: string;

beforeAll(async () => {
  h = await createHarness();
  key = (await h.issue(ALICE, ['imap', 'pop3', 'smtp'])).key;
});
afterAll(async () => {
  await h.close();
});
afterEach(async () => {
  await h.stopAll();
});

/** Reads one SMTP reply (its last line). */
const smtpReply = async (c: LineClient): Promise<string> => (await c.reply()).at(-1)!;

interface Protocol {
  name: 'imap' | 'pop3' | 'smtp';
  greeting(c: LineClient): Promise<string>;
  login(c: LineClient): Promise<string>;
  noop(c: LineClient): Promise<string>;
}

const PROTOCOLS: Protocol[] = [
  {
    name: 'imap',
    greeting: (c) => c.line(),
    login: (c) => c.send(`a LOGIN ${ALICE} ${key}`),
    noop: (c) => c.send('n NOOP'),
  },
  {
    name: 'pop3',
    greeting: (c) => c.line(),
    login: async (c) => {
      await c.send(`USER ${ALICE}`);
      return c.send(`PASS ${key}`);
    },
    noop: (c) => c.send('NOOP'),
  },
  {
    name: 'smtp',
    greeting: smtpReply,
    login: async (c) => {
      c.write('EHLO client.test\r\n');
      await smtpReply(c);
      c.write(`AUTH PLAIN ${plain(ALICE, key)}\r\n`);
      return smtpReply(c);
    },
    noop: async (c) => {
      c.write('NOOP\r\n');
      return smtpReply(c);
    },
  },
];

describe('a full mail listener (limits.connectionsPerListener)', () => {
  for (const p of PROTOCOLS) {
    it(`${p.name}: closes the oldest connection not logged in for a newcomer, never a logged-in session`, async () => {
      const kg = await h.start({ protocols: [p.name], limiter: null, flags: { 'limits.connectionsPerListener': 2 } });
      const port = kg.port(p.name);
      const session = await LineClient.connect(port);
      await p.greeting(session);
      expect(await p.login(session)).toMatch(/^(a OK|\+OK Logged in|235 )/);
      const waiting = await LineClient.connect(port);
      await p.greeting(waiting);
      const newcomer = await LineClient.connect(port);
      expect(await p.greeting(newcomer)).toMatch(/^(\* OK|\+OK|220 )/);
      await waiting.waitClosed();
      expect(await p.noop(session)).toMatch(/^(n OK|\+OK|250 )/);
      for (const c of [session, newcomer]) c.destroy();
    });
  }
});
