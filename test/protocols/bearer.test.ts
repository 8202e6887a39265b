import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey } from '../../src/keys/format.js';
import { startKeygate, type SingleKeygate } from '../helpers/keygate.js';
import { LineClient } from '../helpers/line-client.js';

/**
 * A Keygate key as an OAuth bearer token on Keygate's own listeners: SASL
 * OAUTHBEARER (RFC 7628) and XOAUTH2 on IMAP, POP3 and SMTP, with real
 * clients (imapflow's `accessToken`, nodemailer's OAuth2 with a fixed access
 * token) and raw sockets for the error exchange.
 */
const ALICE = 'alice@example.com';
const DELAY_MS = 120;
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const oauthbearer = (user: string, key: string): string => b64(`n,a=${user},\x01host=localhost\x01port=143\x01auth=Bearer ${key}\x01\x01`);
const xoauth2 = (user: string, key: string): string => b64(`user=${user}\x01auth=Bearer ${key}\x01\x01`);
const json = (challenge: string): unknown => JSON.parse(Buffer.from(challenge, 'base64').toString());
/** Well-formed, checksum and all, but no key of the store. */
const WRONG = generateKey();

let kg: SingleKeygate;
let key: string;

beforeAll(async () => {
  // Trace level: the server logs each IMAP command, so a test can prove which mechanism a client used.
  kg = await startKeygate({ flags: { 'auth.failureDelay': `${DELAY_MS}ms`, 'log.level': 'trace' } });
  ({ key } = await kg.issue(ALICE, ['imap', 'pop3', 'smtp']));
});
afterAll(() => kg.close());

function imapflow(accessToken: string): ImapFlow {
  return new ImapFlow({ host: '127.0.0.1', port: kg.port('imaps'), secure: true, tls: { rejectUnauthorized: false }, logger: false, verifyOnly: true, auth: { user: ALICE, accessToken } });
}

describe('IMAP', () => {
  it('imapflow with accessToken logs in with OAUTHBEARER', async () => {
    const from = kg.logs.length;
    const client = imapflow(key);
    await client.connect();
    expect(client.authenticated).toBeTruthy();
    const commands = kg.logs.slice(from).filter((l) => l.msg === 'IMAP command').map((l) => String(l.command));
    expect(commands.some((c) => / AUTHENTICATE OAUTHBEARER /.test(c))).toBe(true);
    expect(kg.audits().at(-1)).toMatchObject({ protocol: 'imap', account: ALICE, result: 'success' });
  });

  it('imapflow with a wrong token: refused after the failure delay, with the RFC 7628 error', async () => {
    const client = imapflow(WRONG);
    const t0 = performance.now();
    const err = await client.connect().then(
      () => null,
      (e: unknown) => e as { authenticationFailed?: boolean; oauthError?: unknown },
    );
    expect(performance.now() - t0).toBeGreaterThanOrEqual(DELAY_MS - 5);
    expect(err?.authenticationFailed).toBe(true);
    expect(err?.oauthError).toEqual({ status: 'invalid_token' });
    client.close();
  });

  it('raw: XOAUTH2 with SASL-IR, OAUTHBEARER after an empty challenge', async () => {
    const c = await LineClient.connect(kg.port('imap'));
    await c.line();
    expect(await c.command('a', `AUTHENTICATE XOAUTH2 ${xoauth2(ALICE, key)}`)).toMatch(/^a OK /);
    c.destroy();
    const d = await LineClient.connect(kg.port('imap'));
    await d.line();
    expect(await d.send('b AUTHENTICATE OAUTHBEARER')).toBe('+ ');
    expect((await d.send(oauthbearer(ALICE, key))).startsWith('b OK')).toBe(true);
    d.destroy();
  });

  it('raw: a refused token is the error challenge after the delay, then NO whatever the client answers', async () => {
    for (const [mechanism, payload, answer, error] of [
      ['XOAUTH2', xoauth2(ALICE, WRONG), '', { status: '401', schemes: 'bearer' }],
      ['OAUTHBEARER', oauthbearer(ALICE, WRONG), 'AQ==', { status: 'invalid_token' }],
      ['OAUTHBEARER', oauthbearer(ALICE, WRONG), '*', { status: 'invalid_token' }],
    ] as const) {
      const c = await LineClient.connect(kg.port('imap'));
      await c.line();
      const t0 = performance.now();
      const challenge = await c.send(`a AUTHENTICATE ${mechanism} ${payload}`);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(DELAY_MS - 5);
      expect(challenge).toMatch(/^\+ \S+$/);
      expect(json(challenge.slice(2))).toEqual(error);
      expect(await c.send(answer)).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed');
      c.destroy();
    }
    expect(kg.audits().at(-1)).toMatchObject({ protocol: 'imap', result: 'failure', reason: 'unknown_key' });
  });

  it('raw: a malformed bearer message is BAD, without a store lookup or a delay', async () => {
    const c = await LineClient.connect(kg.port('imap'));
    await c.line();
    const audits = kg.audits().length;
    expect(await c.command('a', `AUTHENTICATE OAUTHBEARER ${b64(`n,,\x01auth=Bearer ${key}\x01\x01`)}`)).toBe('a BAD Invalid SASL message');
    expect(await c.command('b', `AUTHENTICATE XOAUTH2 ${b64('user=a\x01')}`)).toBe('b BAD Invalid SASL message');
    expect(kg.audits().length).toBe(audits);
    c.destroy();
  });
});

describe('POP3', () => {
  it('AUTH XOAUTH2 and AUTH OAUTHBEARER log in', async () => {
    for (const line of [`AUTH XOAUTH2 ${xoauth2(ALICE, key)}`, `AUTH OAUTHBEARER ${oauthbearer(ALICE, key)}`]) {
      const c = await LineClient.connect(kg.port('pop3'));
      await c.line();
      expect(await c.send(line)).toBe('+OK Logged in');
      c.destroy();
    }
    expect(kg.audits().at(-1)).toMatchObject({ protocol: 'pop3', result: 'success' });
  });

  it('a refused token: the error challenge after the delay, then -ERR [AUTH]', async () => {
    const c = await LineClient.connect(kg.port('pop3'));
    await c.line();
    const t0 = performance.now();
    const challenge = await c.send(`AUTH OAUTHBEARER ${oauthbearer(ALICE, WRONG)}`);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(DELAY_MS - 5);
    expect(json(challenge.slice(2))).toEqual({ status: 'invalid_token' });
    expect(await c.send('AQ==')).toBe('-ERR [AUTH] Authentication failed');
    // The connection goes on: the right key next.
    expect(await c.send(`AUTH XOAUTH2 ${xoauth2(ALICE, key)}`)).toBe('+OK Logged in');
    c.destroy();
  });

  it('AUTH LOGIN, now that the mechanisms are shared', async () => {
    const c = await LineClient.connect(kg.port('pop3'));
    await c.line();
    expect(await c.send('AUTH LOGIN')).toBe('+ VXNlcm5hbWU6');
    expect(await c.send(b64(ALICE))).toBe('+ UGFzc3dvcmQ6');
    expect(await c.send(b64(key))).toBe('+OK Logged in');
    c.destroy();
  });
});

describe('SMTP', () => {
  const transport = (accessToken: string) =>
    nodemailer.createTransport({ host: '127.0.0.1', port: kg.port('smtps'), secure: true, tls: { rejectUnauthorized: false }, auth: { type: 'OAuth2', user: ALICE, accessToken } });

  it('nodemailer with OAuth2 and a fixed access token (XOAUTH2) authenticates', async () => {
    const t = transport(key);
    await expect(t.verify()).resolves.toBe(true);
    expect(kg.audits().at(-1)).toMatchObject({ protocol: 'smtp', account: ALICE, result: 'success' });
    t.close();
  });

  it('nodemailer with a wrong token is refused with 535 after the error challenge', async () => {
    const t = transport(WRONG);
    await expect(t.verify()).rejects.toMatchObject({ code: 'EAUTH', responseCode: 535 });
    t.close();
  });

  async function ehlo(): Promise<LineClient> {
    const c = await LineClient.connect(kg.port('smtp'));
    await c.reply();
    c.write('EHLO test.example\r\n');
    expect(await c.reply()).toContain('250-AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2');
    return c;
  }

  it('raw: OAUTHBEARER with an initial response and after a 334; XOAUTH2', async () => {
    for (const [first, second] of [[`AUTH OAUTHBEARER ${oauthbearer(ALICE, key)}`, null], ['AUTH OAUTHBEARER', oauthbearer(ALICE, key)], [`AUTH XOAUTH2 ${xoauth2(ALICE, key)}`, null]] as const) {
      const c = await ehlo();
      if (second === null) expect(await c.send(first)).toBe('235 2.7.0 Authentication successful');
      else {
        expect(await c.send(first)).toBe('334 ');
        expect(await c.send(second)).toBe('235 2.7.0 Authentication successful');
      }
      c.destroy();
    }
  });

  it('raw: a refused token is 334 <error> after the delay, then 535; a malformed one is 501', async () => {
    const c = await ehlo();
    const t0 = performance.now();
    const challenge = await c.send(`AUTH OAUTHBEARER ${oauthbearer(ALICE, WRONG)}`);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(DELAY_MS - 5);
    expect(challenge).toMatch(/^334 \S+$/);
    expect(json(challenge.slice(4))).toEqual({ status: 'invalid_token' });
    expect(await c.send('AQ==')).toBe('535 5.7.8 Authentication credentials invalid');
    expect(await c.send(`AUTH XOAUTH2 ${b64('user=x')}`)).toBe('501 5.5.2 Invalid SASL response');
    expect(await c.send('AUTH XOAUTH2')).toBe('334 ');
    expect(await c.send('*')).toBe('501 5.7.0 Authentication aborted');
    expect(await c.send(`AUTH XOAUTH2 ${xoauth2(ALICE, key)}`)).toBe('235 2.7.0 Authentication successful');
    c.destroy();
  });
});
