import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SingleKeygate, startKeygate } from '../../helpers/keygate.js';
import { LineClient } from '../../helpers/line-client.js';

const ACCOUNT = 'alice@example.com';

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed';

let h: SingleKeygate;
let key: string;

beforeAll(async () => {
  h = await startKeygate();
  await h.store.createAccount({ address: ACCOUNT, displayName: null, aliases: ['al@example.com'], disabled: false, upstream: null, createdAt: new Date().toISOString() });
  ({ key } = await h.issue(ACCOUNT, ['imap']));
});
afterAll(() => h.close());

async function connect(): Promise<LineClient> {
  const c = await LineClient.connect(h.port('imap'));
  expect(await c.line()).toMatch(/^\* OK \[CAPABILITY IMAP4rev1 .*\] Keygate ready$/);
  return c;
}

describe('IMAP not-authenticated state from loopback', () => {
  it('greets with capabilities that offer login and STARTTLS', async () => {
    const c = await LineClient.connect(h.port('imap'));
    const greeting = await c.line();
    expect(greeting).toContain('STARTTLS');
    expect(greeting).toContain('AUTH=PLAIN');
    expect(greeting).not.toContain('LOGINDISABLED');
    await new Promise((r) => setTimeout(r, 100));
    expect(c.unread()).toBe(''); // nothing unsolicited
    c.destroy();
  });

  it('answers CAPABILITY, NOOP, ID and LOGOUT, each reply in one piece', async () => {
    const c = await connect();
    c.write('a CAPABILITY\r\n');
    expect(await c.response('a')).toEqual(['* CAPABILITY IMAP4rev1 ID LITERAL+ STARTTLS SASL-IR AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2', 'a OK CAPABILITY completed']);
    expect(await c.command('b', 'NOOP')).toBe('b OK NOOP completed');
    c.write('c ID ("name" "test" "version" "1")\r\n');
    expect(await c.response('c')).toEqual(['* ID ("name" "Keygate")', 'c OK ID completed']);
    c.write('d ID NIL\r\n');
    expect(await c.response('d')).toEqual(['* ID ("name" "Keygate")', 'd OK ID completed']);
    c.write('e LOGOUT\r\n');
    expect(await c.response('e')).toEqual(['* BYE Logging out', 'e OK LOGOUT completed']);
    await c.closed;
  });

  it.each([
    ['atoms', (k: string) => `LOGIN ${ACCOUNT} ${k}`],
    ['quoted strings', (k: string) => `LOGIN "${ACCOUNT}" "${k}"`],
    ['an alias in another case', (k: string) => `LOGIN AL@Example.COM ${k}`],
    ['a key with surrounding whitespace', (k: string) => `LOGIN ${ACCOUNT} "  ${k} "`],
  ])('logs in with LOGIN and %s', async (_name, command) => {
    const c = await connect();
    expect(await c.command('a', command(key))).toBe('a OK [CAPABILITY IMAP4rev1 ID LITERAL+] Logged in');
    expect(await c.command('b', 'LOGOUT')).toBe('b OK LOGOUT completed');
    c.destroy();
  });

  it('logs in with synchronizing literals, sending + only when asked', async () => {
    const c = await connect();
    c.write(`a LOGIN {${ACCOUNT.length}}\r\n`);
    expect(await c.line()).toBe('+ Ready for literal data');
    c.write(`${ACCOUNT} {${key.length}}\r\n`);
    expect(await c.line()).toBe('+ Ready for literal data');
    c.write(`${key}\r\n`);
    expect(await c.line()).toBe('a OK [CAPABILITY IMAP4rev1 ID LITERAL+] Logged in');
    c.destroy();
  });

  it('logs in with non-synchronizing literals (LITERAL+) in one write', async () => {
    const c = await connect();
    c.write(`a LOGIN {${ACCOUNT.length}+}\r\n${ACCOUNT} {${key.length}+}\r\n${key}\r\n`);
    expect(await c.line()).toBe('a OK [CAPABILITY IMAP4rev1 ID LITERAL+] Logged in');
    c.destroy();
  });

  it('AUTHENTICATE PLAIN with SASL-IR, with an empty challenge, and with an authzid equal to the user', async () => {
    const c1 = await connect();
    expect(await c1.command('a', `AUTHENTICATE PLAIN ${b64(`\0${ACCOUNT}\0${key}`)}`)).toMatch(/^a OK /);
    c1.destroy();

    const c2 = await connect();
    c2.write('a AUTHENTICATE PLAIN\r\n');
    expect(await c2.line()).toBe('+ ');
    c2.write(`${b64(`${ACCOUNT}\0${ACCOUNT}\0${key}`)}\r\n`);
    expect(await c2.line()).toMatch(/^a OK /);
    c2.destroy();
  });

  it('AUTHENTICATE PLAIN refuses another authorization identity with the same answer', async () => {
    const c = await connect();
    expect(await c.command('a', `AUTHENTICATE PLAIN ${b64(`bob@example.com\0${ACCOUNT}\0${key}`)}`)).toBe(`a ${FAILED}`);
    expect(h.audits().at(-1)).toMatchObject({ result: 'failure', reason: 'authzid_mismatch', account: ACCOUNT });
    c.destroy();
  });

  it('AUTHENTICATE cancelled with * is BAD, and the connection goes on', async () => {
    const c = await connect();
    c.write('a AUTHENTICATE PLAIN\r\n');
    expect(await c.line()).toBe('+ ');
    c.write('*\r\n');
    expect(await c.line()).toBe('a BAD Authentication cancelled');
    c.write('b AUTHENTICATE LOGIN\r\n');
    expect(await c.line()).toBe('+ VXNlcm5hbWU6');
    c.write('*\r\n');
    expect(await c.line()).toBe('b BAD Authentication cancelled');
    expect(await c.command('c', 'NOOP')).toBe('c OK NOOP completed');
    c.destroy();
  });

  it('AUTHENTICATE refuses bad base64, a malformed PLAIN message and unknown mechanisms', async () => {
    const c = await connect();
    expect(await c.command('a', 'AUTHENTICATE PLAIN ***')).toBe('a BAD Invalid base64 data');
    expect(await c.command('b', `AUTHENTICATE PLAIN ${b64('no-nuls-here')}`)).toBe('b BAD Invalid SASL PLAIN message');
    expect(await c.command('c', 'AUTHENTICATE CRAM-MD5')).toBe('c NO [CANNOT] Unsupported authentication mechanism');
    expect(await c.command('d', 'AUTHENTICATE')).toBe('d BAD Missing arguments');
    c.destroy();
  });

  it('AUTHENTICATE LOGIN, with prompts and with the user name as initial response', async () => {
    const c1 = await connect();
    c1.write('a AUTHENTICATE LOGIN\r\n');
    expect(await c1.line()).toBe('+ VXNlcm5hbWU6');
    c1.write(`${b64(ACCOUNT)}\r\n`);
    expect(await c1.line()).toBe('+ UGFzc3dvcmQ6');
    c1.write(`${b64(key)}\r\n`);
    expect(await c1.line()).toMatch(/^a OK \[CAPABILITY/);
    c1.destroy();

    const c2 = await connect();
    c2.write(`a AUTHENTICATE LOGIN ${b64(ACCOUNT)}\r\n`);
    expect(await c2.line()).toBe('+ UGFzc3dvcmQ6');
    c2.write(`${b64(key)}\r\n`);
    expect(await c2.line()).toMatch(/^a OK /);
    c2.destroy();
  });

  it('gives every refusal the same answer, after the failure delay; the reason goes only to the audit log', async () => {
    const { key: revoked, id: revokedId } = await h.issue(ACCOUNT, ['imap']);
    await h.store.revokeKey(revokedId, new Date().toISOString());
    const { key: smtpOnly } = await h.issue(ACCOUNT, ['smtp']);
    const { key: otherAccount } = await h.issue('bob@example.com', ['imap']);
    const wrongKey = key.slice(0, -8) + 'AAAAAAAA';
    const cases: Array<[string, string, string]> = [
      ['wrong key', ACCOUNT, wrongKey],
      ['revoked key', ACCOUNT, revoked],
      ['unknown user', 'nobody@example.com', key],
      ['wrong scope', ACCOUNT, smtpOnly],
      ['another account', ACCOUNT, otherAccount],
      ['not a key at all', ACCOUNT, 'hunter2'],
    ];
    const c = await connect();
    const replies: string[] = [];
    let tag = 0;
    for (const [, user, secret] of cases) {
      const started = Date.now();
      replies.push(await c.command(`t${++tag}`, `LOGIN ${user} ${secret}`));
      expect(Date.now() - started).toBeGreaterThanOrEqual(h.config.auth.failureDelay - 2);
    }
    expect(replies).toEqual(cases.map((_, i) => `t${i + 1} ${FAILED}`));
    const reasons = h.audits().slice(-cases.length).map((a) => a.reason);
    expect(new Set(reasons).size).toBeGreaterThanOrEqual(5);
    expect(reasons).toContain('revoked');
    // No log line ever carries a key.
    const logText = JSON.stringify(h.logs);
    for (const [, , secret] of cases) if (secret.startsWith('kg_')) expect(logText).not.toContain(secret);
    expect(logText).not.toContain(key);
    c.destroy();
  });

  it('with no backend: mailbox commands answer NO [UNAVAILABLE]; CAPABILITY, NOOP, ID and LOGOUT still work', async () => {
    const c = await connect();
    expect(await c.command('a', `LOGIN ${ACCOUNT} ${key}`)).toMatch(/^a OK /);
    for (const [tag, cmd] of [['b', 'SELECT INBOX'], ['c', 'LIST "" "*"'], ['d', 'STATUS INBOX (MESSAGES)'], ['e', 'EXAMINE INBOX'], ['f', 'UID FETCH 1:* (FLAGS)'], ['g', 'ENABLE UTF8=ACCEPT']]) {
      expect(await c.command(tag!, cmd!)).toBe(`${tag} NO [UNAVAILABLE] No mailbox backend is configured`);
    }
    c.write('h CAPABILITY\r\n');
    expect(await c.response('h')).toEqual(['* CAPABILITY IMAP4rev1 ID LITERAL+', 'h OK CAPABILITY completed']);
    expect(await c.command('i', `LOGIN ${ACCOUNT} ${key}`)).toBe('i BAD Already logged in');
    expect(await c.command('j', 'STARTTLS')).toBe('j BAD Already logged in');
    expect(await c.command('k', 'NOOP')).toBe('k OK NOOP completed');
    c.write('l LOGOUT\r\n');
    expect(await c.response('l')).toEqual(['* BYE Logging out', 'l OK LOGOUT completed']);
    await c.closed;
  });

  it('refuses mailbox commands before login', async () => {
    const c = await connect();
    expect(await c.command('a', 'SELECT INBOX')).toBe('a BAD Command not valid before login');
    c.destroy();
  });

  it('counts an open session in the registry and the sessions gauge, and forgets it on close', async () => {
    const c = await connect();
    await c.command('a', `LOGIN ${ACCOUNT} ${key}`);
    expect(h.sessions.count('imap')).toBe(1);
    const gauge = await h.metrics.sessions.get();
    expect(gauge.values.find((v) => v.labels.protocol === 'imap')?.value).toBe(1);
    c.destroy();
    await c.closed;
    await new Promise((r) => setTimeout(r, 50));
    expect(h.sessions.count('imap')).toBe(0);
  });
});

describe('live revocation', () => {
  it('ends an open session with * BYE within 1 s of the key being revoked', async () => {
    const { key: k, id } = await h.issue(ACCOUNT, ['imap']);
    const c = await connect();
    expect(await c.command('a', `LOGIN ${ACCOUNT} ${k}`)).toMatch(/^a OK /);
    const started = Date.now();
    await h.store.revokeKey(id, new Date().toISOString());
    expect(await c.line(1000)).toBe('* BYE Session revoked');
    await c.closed;
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('ends the session when the account is disabled', async () => {
    await h.store.createAccount({ address: 'carol@example.com', displayName: null, aliases: [], disabled: false, upstream: null, createdAt: new Date().toISOString() }).catch(() => {});
    const { key: k } = await h.issue('carol@example.com', ['imap']);
    const c = await connect();
    expect(await c.command('a', `LOGIN carol@example.com ${k}`)).toMatch(/^a OK /);
    await h.store.updateAccount('carol@example.com', { disabled: true });
    expect(await c.line(1000)).toBe('* BYE Account disabled');
    await c.closed;
  });

  it('ends the session when the key expires', async () => {
    const { key: k } = await h.issue(ACCOUNT, ['imap'], { expiresAt: new Date(Date.now() + 1500).toISOString() });
    const c = await connect();
    expect(await c.command('a', `LOGIN ${ACCOUNT} ${k}`)).toMatch(/^a OK /);
    expect(await c.line(3000)).toBe('* BYE Session expired');
    await c.closed;
  });
});

describe('login limits', () => {
  it('a valid key still logs in while a stale key for the same account keeps failing past the account limit', async () => {
    const limited = await startKeygate({ flags: { 'auth.accountFailures': 3, 'auth.ipFailures': 1000, 'auth.failureDelay': '5ms' } });
    try {
      const { key: stale, id: staleId } = await limited.issue(ACCOUNT, ['imap']);
      const { key: valid } = await limited.issue(ACCOUNT, ['imap']);
      await limited.store.revokeKey(staleId, new Date().toISOString());
      const c = await LineClient.connect(limited.port('imap'));
      await c.line();
      const replies: string[] = [];
      for (let i = 0; i < 6; i++) replies.push(await c.command(`s${i}`, `LOGIN ${ACCOUNT} ${stale}`));
      expect(replies.slice(0, 3)).toEqual(['s0', 's1', 's2'].map((t) => `${t} ${FAILED}`));
      // Past the limit: a temporary refusal, without a store lookup.
      expect(replies.slice(3)).toEqual(['s3', 's4', 's5'].map((t) => `${t} NO [UNAVAILABLE] Temporary authentication failure, try again later`));
      expect(limited.audits().slice(-3).map((a) => a.reason)).toEqual(['rate_limited', 'rate_limited', 'rate_limited']);

      const other = await LineClient.connect(limited.port('imap'));
      await other.line();
      expect(await other.command('v', `LOGIN ${ACCOUNT} ${valid}`)).toMatch(/^v OK /);
      // …and the stale device keeps failing.
      expect(await c.command('s6', `LOGIN ${ACCOUNT} ${stale}`)).toMatch(/^s6 NO \[UNAVAILABLE\]/);
      c.destroy();
      other.destroy();
    } finally {
      await limited.close();
    }
  });
});

describe('debug logging', () => {
  it('traces commands with passwords redacted', async () => {
    const t = await startKeygate({ flags: { 'log.level': 'trace' } });
    try {
      const { key: k } = await t.issue(ACCOUNT, ['imap']);
      for (const [tag, command] of [
        ['a', `LOGIN ${ACCOUNT} "${k}"`],
        ['b', `LOGIN {${ACCOUNT.length}+}\r\n${ACCOUNT} {${k.length}+}\r\n${k}`],
        ['c', `AUTHENTICATE PLAIN ${Buffer.from(`\0${ACCOUNT}\0${k}`).toString('base64')}`], // SASL-IR: the key rides in an atom
        ['d', `LOGIN ${ACCOUNT} ${k}`], // a key is a valid atom: unquoted
      ] as const) {
        const c = await LineClient.connect(t.port('imap'));
        await c.line();
        expect(await c.command(tag, command)).toMatch(/ OK /);
        c.destroy();
      }
      const traced = t.logs.filter((l) => l.msg === 'IMAP command').map((l) => (l as { command?: string }).command);
      // Everything after LOGIN is masked, whatever its syntax (the account is in the audit line).
      expect(traced).toEqual(['a LOGIN [REDACTED]', 'b LOGIN [REDACTED]', 'c AUTHENTICATE PLAIN [REDACTED]', 'd LOGIN [REDACTED]']);
      expect(JSON.stringify(t.logs)).not.toContain(k);
      expect(JSON.stringify(t.logs)).not.toContain(Buffer.from(`\0${ACCOUNT}\0${k}`).toString('base64'));
    } finally {
      await t.close();
    }
  });
});
