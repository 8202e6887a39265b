/**
 * The login rules IMAP, POP3 and SMTP share (Authenticator.logIn,
 * src/protocols/sasl-plain.ts, limits.ts), driven over real sockets against all three
 * listeners with the same scenarios: every refusal is audited, delayed and
 * answered with the protocol's one refusal text; a login that cannot be
 * checked is answered with the protocol's temporary failure after the same
 * delay, and the connection goes on; IMAP and POP3 tolerate the same number
 * of protocol errors.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { generateKey } from '../../src/keys/format.js';
import { MAX_PROTOCOL_ERRORS } from '../../src/protocols/limits.js';
import { createHarness, type Harness, type Keygate } from '../helpers/keygate.js';
import { LineClient, plain } from '../helpers/line-client.js';

const ALICE = 'alice@example.com';
const BOB = 'bob@example.com';
const DELAY_MS = 80;

interface Proto {
  name: 'imap' | 'pop3' | 'smtp';
  /** Reads the greeting (SMTP: and says EHLO). */
  greet(c: LineClient): Promise<void>;
  /** Sends a SASL PLAIN initial response; the final reply line, without an IMAP tag. */
  authPlain(c: LineClient, response: string): Promise<string>;
  /** A pre-login command that shows the connection still works. */
  probe(c: LineClient): Promise<void>;
  refused: string;
  temporary: string;
  loggedIn: RegExp;
}

let tag = 0;
const untagged = (line: string): string => line.slice(line.indexOf(' ') + 1);

const PROTOCOLS: Proto[] = [
  {
    name: 'imap',
    async greet(c) {
      expect(await c.line()).toMatch(/^\* OK \[CAPABILITY .*AUTH=PLAIN.*\] Keygate ready$/);
    },
    async authPlain(c, response) {
      return untagged(await c.send(`t${++tag} AUTHENTICATE PLAIN ${response}`));
    },
    async probe(c) {
      expect(untagged(await c.send(`t${++tag} NOOP`))).toBe('OK NOOP completed');
    },
    refused: 'NO [AUTHENTICATIONFAILED] Authentication failed',
    temporary: 'NO [UNAVAILABLE] Temporary authentication failure, try again later',
    loggedIn: /^OK \[CAPABILITY [^\]]+\] Logged in$/,
  },
  {
    name: 'pop3',
    async greet(c) {
      expect(await c.line()).toBe('+OK Keygate ready');
    },
    authPlain: (c, response) => c.send(`AUTH PLAIN ${response}`),
    async probe(c) {
      c.write('CAPA\r\n');
      expect(await c.multiline()).toContain('SASL PLAIN LOGIN OAUTHBEARER XOAUTH2');
    },
    refused: '-ERR [AUTH] Authentication failed',
    temporary: '-ERR [SYS/TEMP] Authentication temporarily unavailable, try again later',
    loggedIn: /^\+OK Logged in$/,
  },
  {
    name: 'smtp',
    async greet(c) {
      expect((await c.reply()).at(-1)).toMatch(/^220 .* ESMTP Keygate$/);
      c.write('EHLO client.test\r\n');
      expect(await c.reply()).toContain('250-AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2');
    },
    authPlain: async (c, response) => (c.write(`AUTH PLAIN ${response}\r\n`), (await c.reply()).join('\n')),
    async probe(c) {
      c.write('NOOP\r\n');
      expect(await c.reply()).toEqual(['250 OK']);
    },
    refused: '535 5.7.8 Authentication credentials invalid',
    temporary: '454 4.7.0 Temporary authentication failure, try again later',
    loggedIn: /^235 Authentication successful$/,
  },
];

let h: Harness;
let keygate: Keygate;
/** A Keygate whose key store is closed: every lookup fails with StoreUnavailableError. */
let down: Harness;
let downKeygate: Keygate;
let aliceKey: string;
let downKey: string;

beforeAll(async () => {
  const flags = { 'auth.failureDelay': `${DELAY_MS}ms` };
  h = await createHarness();
  aliceKey = (await h.issue(ALICE, ['*'])).key;
  keygate = await h.start({ flags, limiter: null });
  down = await createHarness();
  downKey = (await down.issue(ALICE, ['*'])).key;
  downKeygate = await down.start({ flags, limiter: null });
  await down.store.close();
});

afterAll(async () => {
  await h.close();
  await down.close();
});

afterEach(() => {
  vi.restoreAllMocks();
});

async function connect(p: Proto, on = keygate): Promise<LineClient> {
  const c = await LineClient.connect(on.port(p.name));
  await p.greet(c);
  return c;
}

/** The reply and how long it took. */
async function timed(fn: () => Promise<string>): Promise<{ reply: string; ms: number }> {
  const started = Date.now();
  const reply = await fn();
  return { reply, ms: Date.now() - started };
}

describe.each(PROTOCOLS)('$name login outcome', (p) => {
  it('an authzid naming someone else gets the wrong-key refusal, after the failure delay, and one audit line', async () => {
    const c = await connect(p);
    const wrong = await timed(() => p.authPlain(c, plain(ALICE, generateKey())));
    const auditsBefore = h.audits().length;
    const mismatch = await timed(() => p.authPlain(c, plain(ALICE, aliceKey, BOB)));
    expect(wrong.reply).toBe(p.refused);
    expect(mismatch.reply).toBe(p.refused);
    expect(wrong.ms).toBeGreaterThanOrEqual(DELAY_MS - 5);
    expect(mismatch.ms).toBeGreaterThanOrEqual(DELAY_MS - 5);
    const audits = h.audits().slice(auditsBefore);
    expect(audits).toHaveLength(1);
    expect(audits[0]).toMatchObject({ audit: true, protocol: p.name, ip: '127.0.0.1', account: ALICE, result: 'failure', reason: 'authzid_mismatch' });
    // Refusals are not protocol errors: the same connection logs in afterwards.
    expect(await p.authPlain(c, plain(ALICE, aliceKey))).toMatch(p.loggedIn);
    c.destroy();
  });

  it('accepts the user in the authzid with an empty authcid, as many clients send it', async () => {
    const c = await connect(p);
    expect(await p.authPlain(c, plain('', aliceKey, ALICE))).toMatch(p.loggedIn);
    c.destroy();
  });

  it('an unreachable key store: the temporary failure after the failure delay, audited, and the connection goes on', async () => {
    const c = await connect(p, downKeygate);
    for (let i = 0; i < 2; i++) {
      const auditsBefore = down.audits().length;
      const attempt = await timed(() => p.authPlain(c, plain(ALICE, downKey)));
      expect(attempt.reply).toBe(p.temporary);
      expect(attempt.ms).toBeGreaterThanOrEqual(DELAY_MS - 5);
      expect(down.audits().slice(auditsBefore)).toEqual([expect.objectContaining({ protocol: p.name, result: 'failure', reason: 'store_unavailable' })]);
      await p.probe(c);
    }
    c.destroy();
  });

  it('a check that throws: logged at error level without the key, the temporary failure after the delay, and the connection goes on', async () => {
    const c = await connect(p);
    const lookup = vi.spyOn(h.store, 'findByHash').mockRejectedValue(new Error('disk on fire'));
    const logsBefore = h.logs.length;
    const attempt = await timed(() => p.authPlain(c, plain(ALICE, aliceKey)));
    expect(attempt.reply).toBe(p.temporary);
    expect(attempt.ms).toBeGreaterThanOrEqual(DELAY_MS - 5);
    const logged = h.logs.slice(logsBefore);
    const errors = logged.filter((l) => (l.level ?? 0) >= 50);
    expect(errors).toEqual([expect.objectContaining({ msg: 'login check failed', protocol: p.name, ip: '127.0.0.1', account: ALICE })]);
    expect(JSON.stringify(errors)).toContain('disk on fire');
    expect(JSON.stringify(logged)).not.toContain(aliceKey);
    expect(JSON.stringify(logged)).not.toContain(aliceKey.slice(3, 20));
    await p.probe(c);
    lookup.mockRestore();
    expect(await p.authPlain(c, plain(ALICE, aliceKey))).toMatch(p.loggedIn);
    c.destroy();
  });
});

/** `unknown` sends an unknown command and returns its reply line; `closing` is everything the 11th gets before the close. */
const PROTOCOL_ERRORS: Array<{ name: 'imap' | 'pop3'; unknown: (c: LineClient, n: number) => Promise<string>; answer: string; closing: string[] }> = [
  {
    name: 'imap',
    unknown: async (c, n) => untagged(await c.send(`e${n} FROBNICATE`)),
    answer: 'BAD Unknown command',
    closing: ['BAD Unknown command', '* BYE Too many protocol errors'],
  },
  {
    name: 'pop3',
    unknown: (c) => c.send('FROBNICATE'),
    answer: '-ERR Unknown command',
    closing: ['-ERR Too many errors, closing connection'],
  },
];

describe.each(PROTOCOL_ERRORS)('$name protocol errors', (p) => {
  it(`answers the first ${MAX_PROTOCOL_ERRORS} and closes on the next, like the other protocol`, async () => {
    // The limit is "tolerated per connection": the 10th error is still answered, the 11th closes (same in IMAP and POP3).
    expect(MAX_PROTOCOL_ERRORS).toBe(10);
    const proto = PROTOCOLS.find((x) => x.name === p.name)!;
    const c = await connect(proto);
    for (let n = 1; n <= MAX_PROTOCOL_ERRORS; n++) expect(await p.unknown(c, n)).toBe(p.answer);
    // Still open after the 10th: a valid command works.
    await proto.probe(c);
    const last = [await p.unknown(c, MAX_PROTOCOL_ERRORS + 1)];
    await c.waitClosed();
    last.push(...c.pending());
    expect(last).toEqual(p.closing);
  });
});

describe('what a client says of itself', () => {
  it('IMAP ID name and version, and the SMTP EHLO name, are kept with the login attempt', async () => {
    const imap = await connect(PROTOCOLS[0]!);
    expect(await imap.command('i1', `ID ("name" "Thunderbird" "version" "128.3.1" "os" "${'x'.repeat(300)}")`)).toBe('i1 OK ID completed');
    let before = h.audits().length;
    expect(untagged(await imap.send(`t${++tag} AUTHENTICATE PLAIN ${plain(ALICE, aliceKey)}`))).toMatch(PROTOCOLS[0]!.loggedIn);
    expect(h.audits().slice(before)).toEqual([expect.objectContaining({ protocol: 'imap', result: 'success', client: { name: 'Thunderbird', version: '128.3.1' } })]);
    imap.destroy();

    // The greeting step says EHLO client.test.
    const smtp = await connect(PROTOCOLS[2]!);
    before = h.audits().length;
    expect(await PROTOCOLS[2]!.authPlain(smtp, plain(ALICE, generateKey()))).toBe(PROTOCOLS[2]!.refused);
    expect(h.audits().slice(before)).toEqual([expect.objectContaining({ protocol: 'smtp', result: 'failure', client: { name: 'client.test' } })]);
    smtp.destroy();
  });
});
