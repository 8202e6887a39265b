import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../helpers/free-port.js';
import { startKeygate, type SingleKeygate } from '../helpers/keygate.js';
import { LineClient } from '../helpers/line-client.js';
import { SaslClient } from '../helpers/sasl-client.js';
import { findSecret } from '../helpers/secret-forms.js';

/**
 * At `log.level=trace` every client line is traced, and no secret reaches
 * the log in any form: every login form of IMAP, POP3, SMTP and the
 * Dovecot-protocol SASL server, with a valid key (logged in) and with a
 * wrong password that looks like nothing in particular (refused), over real
 * sockets to a real Keygate. The whole log is searched for each secret as
 * is, without its `kg_`, percent-encoded and in base64 at every alignment
 * (so inside a PLAIN, XOAUTH2 or OAUTHBEARER blob too).
 */
const ALICE = 'alice@example.com';
/** A password a user might type by mistake: no key shape for the last-resort scrubber to catch. */
const WRONG = 'Hunter2-correct-horse-battery';
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const plain = (secret: string): string => b64(`\0${ALICE}\0${secret}`);
const xoauth2 = (secret: string): string => b64(`user=${ALICE}\x01auth=Bearer ${secret}\x01\x01`);
const oauthbearer = (secret: string): string => b64(`n,a=${ALICE},\x01host=localhost\x01port=143\x01auth=Bearer ${secret}\x01\x01`);

/** A line to send and the reply line that ends the step (lines before it are passed over). */
type Step = [send: string, until: RegExp];
type Form = { name: string; steps: (secret: string) => Step[] };

const IMAP_DONE = /^t (OK|NO|BAD) /;
const IMAP_GO = /^\+/;
const IMAP_FORMS: Form[] = [
  { name: 'LOGIN, atom', steps: (s) => [[`t LOGIN ${ALICE} ${s}`, IMAP_DONE]] },
  { name: 'LOGIN, lower case', steps: (s) => [[`t login ${ALICE} ${s}`, IMAP_DONE]] },
  { name: 'LOGIN, quoted', steps: (s) => [[`t LOGIN "${ALICE}" "${s}"`, IMAP_DONE]] },
  { name: 'LOGIN, synchronizing literal', steps: (s) => [[`t LOGIN ${ALICE} {${s.length}}`, IMAP_GO], [s, IMAP_DONE]] },
  { name: 'LOGIN, non-synchronizing literals', steps: (s) => [[`t LOGIN {${ALICE.length}+}\r\n${ALICE} {${s.length}+}\r\n${s}`, IMAP_DONE]] },
  { name: 'LOGIN, one argument too many', steps: (s) => [[`t LOGIN ${ALICE} ${s} extra`, IMAP_DONE]] },
  { name: 'LOGIN without a tag', steps: (s) => [[`LOGIN ${ALICE} ${s}`, /^(LOGIN|\*) BAD /]] },
  { name: 'AUTHENTICATE PLAIN, SASL-IR', steps: (s) => [[`t AUTHENTICATE PLAIN ${plain(s)}`, IMAP_DONE]] },
  { name: 'AUTHENTICATE PLAIN, continuation', steps: (s) => [['t AUTHENTICATE PLAIN', IMAP_GO], [plain(s), IMAP_DONE]] },
  { name: 'AUTHENTICATE LOGIN', steps: (s) => [['t AUTHENTICATE LOGIN', IMAP_GO], [b64(ALICE), IMAP_GO], [b64(s), IMAP_DONE]] },
  { name: 'AUTHENTICATE LOGIN, SASL-IR', steps: (s) => [[`t AUTHENTICATE LOGIN ${b64(ALICE)}`, IMAP_GO], [b64(s), IMAP_DONE]] },
  { name: 'AUTHENTICATE XOAUTH2, SASL-IR', steps: (s) => [[`t AUTHENTICATE XOAUTH2 ${xoauth2(s)}`, IMAP_DONE]] },
  { name: 'AUTHENTICATE XOAUTH2, continuation', steps: (s) => [['t AUTHENTICATE XOAUTH2', IMAP_GO], [xoauth2(s), IMAP_DONE]] },
  { name: 'AUTHENTICATE OAUTHBEARER, SASL-IR', steps: (s) => [[`t AUTHENTICATE OAUTHBEARER ${oauthbearer(s)}`, IMAP_DONE]] },
  { name: 'AUTHENTICATE OAUTHBEARER, continuation', steps: (s) => [['t AUTHENTICATE OAUTHBEARER', IMAP_GO], [oauthbearer(s), IMAP_DONE]] },
];

const POP3_DONE = /^(\+OK|-ERR)/;
const POP3_GO = /^\+ /;
const POP3_FORMS: Form[] = [
  { name: 'USER, PASS', steps: (s) => [[`USER ${ALICE}`, /^\+OK/], [`PASS ${s}`, POP3_DONE]] },
  { name: 'USER, pass (lower case)', steps: (s) => [[`USER ${ALICE}`, /^\+OK/], [`pass ${s}`, POP3_DONE]] },
  { name: 'PASS without USER', steps: (s) => [[`PASS ${s}`, POP3_DONE]] },
  { name: 'AUTH PLAIN, initial response', steps: (s) => [[`AUTH PLAIN ${plain(s)}`, POP3_DONE]] },
  { name: 'AUTH PLAIN, continuation', steps: (s) => [['AUTH PLAIN', POP3_GO], [plain(s), POP3_DONE]] },
  { name: 'AUTH LOGIN', steps: (s) => [['AUTH LOGIN', POP3_GO], [b64(ALICE), POP3_GO], [b64(s), POP3_DONE]] },
  { name: 'AUTH XOAUTH2, initial response', steps: (s) => [[`AUTH XOAUTH2 ${xoauth2(s)}`, POP3_DONE]] },
  { name: 'AUTH XOAUTH2, continuation', steps: (s) => [['AUTH XOAUTH2', POP3_GO], [xoauth2(s), POP3_DONE]] },
  { name: 'AUTH OAUTHBEARER, initial response', steps: (s) => [[`AUTH OAUTHBEARER ${oauthbearer(s)}`, POP3_DONE]] },
  { name: 'AUTH OAUTHBEARER, continuation', steps: (s) => [['AUTH OAUTHBEARER', POP3_GO], [oauthbearer(s), POP3_DONE]] },
];

const SMTP_DONE = /^[245]\d\d /;
const SMTP_GO = /^334 /;
const SMTP_FORMS: Form[] = [
  { name: 'AUTH PLAIN, initial response', steps: (s) => [[`AUTH PLAIN ${plain(s)}`, SMTP_DONE]] },
  { name: 'auth plain (lower case), initial response', steps: (s) => [[`auth plain ${plain(s)}`, SMTP_DONE]] },
  { name: 'AUTH PLAIN with tabs', steps: (s) => [[`AUTH\tPLAIN\t${plain(s)}`, SMTP_DONE]] },
  { name: 'AUTH PLAIN, continuation', steps: (s) => [['AUTH PLAIN', SMTP_GO], [plain(s), SMTP_DONE]] },
  { name: 'AUTH LOGIN', steps: (s) => [['AUTH LOGIN', SMTP_GO], [b64(ALICE), SMTP_GO], [b64(s), SMTP_DONE]] },
  { name: 'AUTH LOGIN, initial response', steps: (s) => [[`AUTH LOGIN ${b64(ALICE)}`, SMTP_GO], [b64(s), SMTP_DONE]] },
  { name: 'AUTH XOAUTH2, initial response', steps: (s) => [[`AUTH XOAUTH2 ${xoauth2(s)}`, SMTP_DONE]] },
  { name: 'AUTH XOAUTH2, continuation', steps: (s) => [['AUTH XOAUTH2', SMTP_GO], [xoauth2(s), SMTP_DONE]] },
  { name: 'AUTH OAUTHBEARER, initial response', steps: (s) => [[`AUTH OAUTHBEARER ${oauthbearer(s)}`, SMTP_DONE]] },
  { name: 'AUTH OAUTHBEARER, continuation', steps: (s) => [['AUTH OAUTHBEARER', SMTP_GO], [oauthbearer(s), SMTP_DONE]] },
];

/** Dovecot-protocol requests as Postfix sends them; `id` numbers requests on one connection. */
const SASL_AUTH = (id: number, mech: string, resp?: string): string[] => ['AUTH', String(id), mech, 'service=smtp', 'nologin', 'lip=127.0.0.1', 'rip=127.0.0.1', 'secured', ...(resp === undefined ? [] : [`resp=${resp}`])];
type SaslForm = { name: string; run: (c: SaslClient, id: number, secret: string) => Promise<string[]> };
const SASL_FORMS: SaslForm[] = [
  { name: 'PLAIN, resp=', run: (c, id, s) => c.send(...SASL_AUTH(id, 'PLAIN', plain(s))) },
  { name: 'PLAIN, CONT', run: async (c, id, s) => (await c.send(...SASL_AUTH(id, 'PLAIN')), c.send('CONT', String(id), plain(s))) },
  { name: 'LOGIN', run: async (c, id, s) => (await c.send(...SASL_AUTH(id, 'LOGIN')), await c.send('CONT', String(id), b64(ALICE)), c.send('CONT', String(id), b64(s))) },
  { name: 'XOAUTH2, resp=', run: (c, id, s) => c.send(...SASL_AUTH(id, 'XOAUTH2', xoauth2(s))) },
  { name: 'OAUTHBEARER, CONT', run: async (c, id, s) => (await c.send(...SASL_AUTH(id, 'OAUTHBEARER')), c.send('CONT', String(id), oauthbearer(s))) },
];

let kg: SingleKeygate;
let key: string;
let saslPort: number;

beforeAll(async () => {
  saslPort = await freePort();
  kg = await startKeygate({ flags: { 'log.level': 'trace', 'saslServer.port': saslPort } });
  ({ key } = await kg.issue(ALICE, ['imap', 'pop3', 'smtp']));
});
afterAll(() => kg?.close());

/**
 * Runs one form on a fresh connection: each step's line, then reading on to
 * the line that ends it. A refused bearer token is an error challenge first
 * (RFC 7628): on the last step it is answered with an empty line.
 */
async function runForm(port: number, greeting: Step[], steps: Step[]): Promise<string> {
  const c = await LineClient.connect(port);
  try {
    await c.line();
    const all = [...greeting, ...steps];
    let last = '';
    for (const [i, [send, until]] of all.entries()) {
      c.write(`${send}\r\n`);
      for (last = await c.line(); !until.test(last); last = await c.line()) {
        if (i === all.length - 1 && /^(\+|334) \S/.test(last)) c.write('\r\n');
      }
    }
    return last;
  } finally {
    c.destroy();
  }
}

function traced(message: string): string[] {
  return kg.logs.filter((l) => l.msg === message).map((l) => String(l.command ?? l.response));
}

describe('the trace of every login form holds no secret', () => {
  it('IMAP, POP3, SMTP and the SASL server, with a valid key and with a wrong password', async () => {
    const outcomes: string[] = [];
    for (const [secret, ok] of [
      [key, true],
      [WRONG, false],
    ] as const) {
      for (const f of IMAP_FORMS) outcomes.push(`imap ${f.name} ${ok}: ${await runForm(kg.port('imap'), [], f.steps(secret))}`);
      for (const f of POP3_FORMS) outcomes.push(`pop3 ${f.name} ${ok}: ${await runForm(kg.port('pop3'), [], f.steps(secret))}`);
      for (const f of SMTP_FORMS) outcomes.push(`smtp ${f.name} ${ok}: ${await runForm(kg.port('smtp'), [['EHLO client.example', /^250 /]], f.steps(secret))}`);
      const { client } = await SaslClient.handshaken(saslPort);
      for (const [i, f] of SASL_FORMS.entries()) outcomes.push(`sasl ${f.name} ${ok}: ${(await f.run(client, i + 1, secret)).slice(0, 2).join(' ')}`);
      client.destroy();
    }
    // The forms did log in (or were refused) as they should, so the secrets really went through the code that traces.
    const okay = (o: string): boolean => /: (t OK|\+OK|235|OK \d)/.test(o);
    expect(outcomes.filter((o) => o.includes(' true: ') && !o.includes('one argument too many') && !o.includes('without') && !o.includes('with tabs') && !okay(o))).toEqual([]);
    expect(outcomes.filter((o) => o.includes(' false: ') && okay(o))).toEqual([]);

    expect(findSecret(JSON.stringify(kg.logs), [key, WRONG])).toBeNull();

    // Every protocol traced its lines, secrets masked by position.
    expect(traced('IMAP command')).toEqual(expect.arrayContaining(['t LOGIN [REDACTED]', 't AUTHENTICATE PLAIN [REDACTED]', 't AUTHENTICATE XOAUTH2', 'LOGIN [REDACTED]']));
    expect(traced('POP3 command')).toEqual(expect.arrayContaining([`USER ${ALICE}`, 'PASS [REDACTED]', 'pass [REDACTED]', 'AUTH PLAIN [REDACTED]', 'AUTH LOGIN']));
    expect(traced('SMTP command')).toEqual(expect.arrayContaining(['EHLO client.example', 'AUTH PLAIN [REDACTED]', 'auth plain [REDACTED]', 'AUTH OAUTHBEARER']));
    expect(traced('SASL command')).toEqual(expect.arrayContaining(['AUTH 1 PLAIN [REDACTED]', 'CONT 2 [REDACTED]', 'AUTH 3 LOGIN [REDACTED]']));
    for (const p of ['IMAP', 'POP3', 'SMTP']) expect(traced(`${p} SASL response`).length).toBeGreaterThanOrEqual(10);
    // Each names the client it came from.
    const lines = kg.logs.filter((l) => / (command|SASL response)$/.test(l.msg ?? ''));
    expect(lines.filter((l) => l.ip !== '127.0.0.1')).toEqual([]);
  });

  it('real clients: imapflow and nodemailer with the key leave no trace of it', async () => {
    const from = kg.logs.length;
    const imap = new ImapFlow({ host: '127.0.0.1', port: kg.port('imaps'), secure: true, tls: { rejectUnauthorized: false }, logger: false, verifyOnly: true, auth: { user: ALICE, pass: key } });
    await imap.connect();
    expect(imap.authenticated).toBeTruthy();
    for (const authMethod of ['PLAIN', 'LOGIN']) {
      const smtp = nodemailer.createTransport({ host: '127.0.0.1', port: kg.port('smtps'), secure: true, tls: { rejectUnauthorized: false }, authMethod, auth: { user: ALICE, pass: key } });
      await expect(smtp.verify()).resolves.toBe(true);
      smtp.close();
    }
    const logs = kg.logs.slice(from);
    expect(logs.filter((l) => l.msg === 'SMTP command').map((l) => l.command)).toEqual(expect.arrayContaining(['AUTH PLAIN [REDACTED]', 'AUTH LOGIN']));
    expect(findSecret(JSON.stringify(logs), [key])).toBeNull();
  });
});
