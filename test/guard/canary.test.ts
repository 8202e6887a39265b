/**
 * Canary keys over real sockets: one canary presented over IMAP, POP3, SMTP
 * and HTTP is refused each time exactly as a wrong key is (same reply, same
 * failure delay), and each use gives one warn line with what is known of the
 * client (never the key), one count in keygate_canary_uses_total and one
 * key.canary_used event.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KeyEvent } from '../../src/events/types.js';
import { generateKey } from '../../src/keys/format.js';
import { issueKey } from '../../src/services/keys.js';
import { createHarness, type Harness, type Keygate } from '../helpers/keygate.js';
import { LineClient, plain } from '../helpers/line-client.js';

const ALICE = 'alice@example.com';
const DELAY_MS = 80;

let h: Harness;
let keygate: Keygate;
let canary: string;
let canaryId: string;
const events: KeyEvent[] = [];

beforeAll(async () => {
  h = await createHarness();
  const made = await issueKey(h.store, 'operator', { name: 'planted in deploy.env', account: ALICE, scopes: ['*'], canary: true });
  canary = made.key;
  canaryId = made.record.id;
  // The canary's scopes would allow everything: it is the mark alone that refuses it.
  keygate = await h.start({ flags: { 'auth.failureDelay': `${DELAY_MS}ms` }, limiter: null, http: true });
  keygate.events.listen((e) => events.push(e));
});

afterAll(async () => {
  await h.close();
});

/** The reply and how long it took. */
async function timed<T>(fn: () => Promise<T>): Promise<{ reply: T; ms: number }> {
  const started = Date.now();
  const reply = await fn();
  return { reply, ms: Date.now() - started };
}

const tries: { surface: string; attempt(key: string): Promise<unknown> }[] = [
  {
    surface: 'imap',
    async attempt(key) {
      const c = await LineClient.connect(keygate.port('imap'));
      await c.line();
      await c.command('a', 'ID ("name" "exfil-script" "version" "0.1")');
      const reply = await c.send(`b LOGIN ${ALICE} ${key}`);
      c.destroy();
      return reply;
    },
  },
  {
    surface: 'pop3',
    async attempt(key) {
      const c = await LineClient.connect(keygate.port('pop3'));
      await c.line();
      await c.send(`USER ${ALICE}`);
      const reply = await c.send(`PASS ${key}`);
      c.destroy();
      return reply;
    },
  },
  {
    surface: 'smtp',
    async attempt(key) {
      const c = await LineClient.connect(keygate.port('smtp'));
      await c.reply();
      c.write('EHLO thief.example\r\n');
      await c.reply();
      c.write(`AUTH PLAIN ${plain(ALICE, key)}\r\n`);
      const reply = (await c.reply()).join('\n');
      c.destroy();
      return reply;
    },
  },
  {
    surface: 'http',
    async attempt(key) {
      const res = await fetch(`http://127.0.0.1:${keygate.port('http')}/api/smtp-credentials`, { headers: { authorization: `Bearer ${key}`, 'user-agent': 'curl/8.0' } });
      return { status: res.status, authenticate: res.headers.get('www-authenticate'), body: await res.text() };
    },
  },
];

describe('a canary key', () => {
  it('is refused on IMAP, POP3, SMTP and HTTP exactly like a wrong key, and each use is logged, counted and raised once', async () => {
    const before = h.logs.length;
    for (const t of tries) {
      const wrong = await timed(() => t.attempt(generateKey()));
      const bait = await timed(() => t.attempt(canary));
      expect(bait.reply, t.surface).toEqual(wrong.reply);
      expect(bait.ms, t.surface).toBeGreaterThanOrEqual(DELAY_MS - 5);
      expect(wrong.ms, t.surface).toBeGreaterThanOrEqual(DELAY_MS - 5);
    }
    // What the clients saw: the protocols' one refusal text.
    expect(await tries[0]!.attempt(canary)).toBe('b NO [AUTHENTICATIONFAILED] Authentication failed');
    expect((await tries[3]!.attempt(canary)) as { status: number }).toMatchObject({ status: 401 });

    const warns = h.logs.slice(before).filter((l) => l.msg === 'canary key used');
    expect(warns.map((l) => l.protocol)).toEqual(['imap', 'pop3', 'smtp', 'http', 'imap', 'http']);
    for (const w of warns) expect(w).toMatchObject({ level: 40, canary: true, keyId: canaryId, keyName: 'planted in deploy.env', keyAccount: ALICE, ip: '127.0.0.1' });
    expect(warns[0]).toMatchObject({ username: ALICE, client: { name: 'exfil-script', version: '0.1' }, secure: false });
    expect(warns[0]!.port).toEqual(expect.any(Number));
    expect(warns[2]).toMatchObject({ client: { name: 'thief.example' } });
    expect(warns[3]).toMatchObject({ client: { name: 'curl/8.0' } });
    // The audit line names the reason for the operator; the client never learns it.
    expect(h.audits().slice(-1)[0]).toMatchObject({ reason: 'canary', result: 'failure', keyId: canaryId });
    // Never the key, in any line.
    expect(JSON.stringify(h.logs)).not.toContain(canary);

    const metrics = await keygate.metrics.registry.getSingleMetric('keygate_canary_uses_total')!.get();
    const byProtocol = Object.fromEntries(metrics.values.map((v) => [v.labels.protocol, v.value]));
    expect(byProtocol).toEqual({ imap: 2, pop3: 1, smtp: 1, http: 2 });

    const raised = events.filter((e) => e.type === 'key.canary_used');
    expect(raised.map((e) => e.data.protocol)).toEqual(['imap', 'pop3', 'smtp', 'http', 'imap', 'http']);
    expect(raised[0]).toMatchObject({ account: ALICE, keyId: canaryId, data: { ip: '127.0.0.1', username: ALICE, client: { name: 'exfil-script' } } });
    expect(JSON.stringify(raised)).not.toContain(canary);
    expect(events.filter((e) => e.type !== 'key.canary_used')).toEqual([]);
  });

  it('can be issued from the API by a key that could issue it as a plain key, and is listed as a canary', async () => {
    const admin = await h.issue(null, ['*']);
    const res = await fetch(`http://127.0.0.1:${keygate.port('http')}/api/accounts/${ALICE}/smtp-credentials`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'bait in repo', scopes: ['smtp'], canary: true }),
    });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { id: string; apiKey: string; canary?: boolean };
    expect(body).toMatchObject({ canary: true, apiKey: expect.stringMatching(/^kg_[0-9A-Za-z]{49}$/) });
    const c = await LineClient.connect(keygate.port('smtp'));
    await c.reply();
    c.write('EHLO x\r\n');
    await c.reply();
    c.write(`AUTH PLAIN ${plain(ALICE, body.apiKey)}\r\n`);
    expect((await c.reply()).join('\n')).toBe('535 5.7.8 Authentication credentials invalid');
    c.destroy();
    // A bound key without api:write cannot issue one at all (the grant rule of any key).
    const reader = await h.issue(ALICE, ['api:read']);
    const denied = await fetch(`http://127.0.0.1:${keygate.port('http')}/api/smtp-credentials`, {
      method: 'POST',
      headers: { authorization: `Bearer ${reader.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'x', scopes: ['smtp'], canary: true }),
    });
    expect(denied.status).toBe(403);
  });
});
