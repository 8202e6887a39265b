/**
 * Per-key sending limits across two Keygate instances sharing one real
 * redis-server, relaying to a real SMTP upstream (smtp-server) started
 * here: recipients per message (452 4.5.3), recipients per day and messages
 * per hour (450 4.7.1) hold whichever instance a client uses, concurrent
 * senders never pass the hourly limit together, and each refusal has its
 * reason in the audit. Also: a leak report to one instance ends a session
 * on the other.
 */
import { createHmac } from 'node:crypto';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBackends } from '../../src/backends/index.js';
import { NO_BACKENDS, type ClosableBackends } from '../../src/backends/types.js';
import { loadConfig } from '../../src/config.js';
import { issueKey } from '../../src/services/keys.js';
import { openRedisStore } from '../../src/store/redis.js';
import { freePort } from '../helpers/free-port.js';
import { createHarness, type Harness, type Keygate } from '../helpers/keygate.js';
import { LineClient, plain } from '../helpers/line-client.js';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';

const ALICE = 'alice@example.com';
const HMAC_SECRET = 'two-instance-leak-secret';

describe.runIf(redisAvailable())('sending limits across two instances on one Redis', () => {
  let redis: RedisServer;
  let upstream: SMTPServer;
  const relays: ClosableBackends[] = [];
  const delivered: string[][] = [];
  const harnesses: Harness[] = [];
  let one: Keygate;
  let two: Keygate;

  beforeAll(async () => {
    redis = await startRedis();
    const upstreamPort = await freePort();
    upstream = new SMTPServer({
      authOptional: true,
      allowInsecureAuth: true,
      disabledCommands: ['STARTTLS'],
      disableReverseLookup: true,
      logger: false,
      onAuth: (auth, _s, cb) => cb(null, { user: auth.username }),
      onData(stream, s, cb) {
        stream.resume();
        stream.on('end', () => {
          delivered.push(s.envelope.rcptTo.map((r) => r.address));
          cb(null, '2.0.0 queued');
        });
      },
    });
    await new Promise<void>((r) => upstream.listen(upstreamPort, '127.0.0.1', () => r()));
    const flags = {
      'dbs.redis': redis.url,
      secret: 'limits-test-secret-0123456789',
      'upstream.smtp.host': '127.0.0.1',
      'upstream.smtp.port': upstreamPort,
      'upstream.smtp.tls': 'none',
      'upstream.master.user': 'keygate',
      'upstream.master.password': 'master-pw',
      'leaks.hmacSecret': HMAC_SECRET,
    };
    const ns = `limits${Date.now()}`;
    for (let i = 0; i < 2; i++) harnesses.push(await createHarness({ store: await openRedisStore(redis.url, { namespace: ns, touchIntervalMs: 20 }) }));
    // SMTP relays to the upstream; IMAP has no route, but its sessions are what a leak report must end, so they are let in with no backend.
    for (const h of harnesses) relays.push(createBackends(loadConfig({ env: {}, flags }), h.store, h.logger));
    one = await harnesses[0]!.start({ flags, limiter: null, http: true, backends: { ...NO_BACKENDS, smtp: relays[0]!.smtp } });
    two = await harnesses[1]!.start({ flags, limiter: null, backends: { ...NO_BACKENDS, smtp: relays[1]!.smtp } });
  });

  afterAll(async () => {
    for (const r of relays) await r.close();
    for (const h of harnesses) {
      await h.close();
      await h.store.close();
    }
    await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
    await redis?.stop();
  });

  /** Logs in over SMTP on `on` and returns the client, ready for MAIL FROM. */
  async function smtp(on: Keygate, key: string): Promise<LineClient> {
    const c = await LineClient.connect(on.port('smtp'));
    await c.reply();
    c.write('EHLO sender.test\r\n');
    await c.reply();
    c.write(`AUTH PLAIN ${plain(ALICE, key)}\r\n`);
    expect(await c.reply()).toEqual(['235 Authentication successful']);
    return c;
  }
  const say = async (c: LineClient, line: string): Promise<string> => (c.write(`${line}\r\n`), (await c.reply()).join('\n'));

  /** One transaction; the replies to MAIL, each RCPT, and DATA's end (or DATA itself when refused). */
  async function send(c: LineClient, to: string[]): Promise<string[]> {
    const replies = [await say(c, `MAIL FROM:<${ALICE}>`)];
    if (!replies[0]!.startsWith('250')) return replies;
    for (const rcpt of to) replies.push(await say(c, `RCPT TO:<${rcpt}>`));
    if (!replies.slice(1).some((r) => r.startsWith('250'))) return replies;
    const go = await say(c, 'DATA');
    if (!go.startsWith('354')) return [...replies, go];
    replies.push(await say(c, `Subject: hi\r\nFrom: ${ALICE}\r\n\r\nhello\r\n.`));
    return replies;
  }

  it('holds recipients per message, recipients per day and messages per hour whichever instance is used', async () => {
    const { key, record } = await issueKey(harnesses[0]!.store, 'operator', {
      name: 'newsletter',
      account: ALICE,
      scopes: ['smtp'],
      limits: { messagesPerHour: 3, recipientsPerMessage: 2, recipientsPerDay: 5 },
    });
    const a = await smtp(one, key);
    const b = await smtp(two, key);
    // Instance one: a third recipient in one message is too many; the two others go.
    expect(await send(a, ['r1@example.net', 'r2@example.net', 'r3@example.net'])).toEqual([
      '250 Accepted',
      '250 Accepted',
      '250 Accepted',
      '452 4.5.3 Too many recipients for this key in one message',
      '250 2.0.0 queued',
    ]);
    // Instance two: two more (4 of 5 today, 2 of 3 this hour).
    expect(await send(b, ['r4@example.net', 'r5@example.net'])).toEqual(['250 Accepted', '250 Accepted', '250 Accepted', '250 2.0.0 queued']);
    // Instance one: the day's fifth recipient passes, the sixth does not; the message (third of the hour) goes to the one.
    expect(await send(a, ['r6@example.net', 'r7@example.net'])).toEqual([
      '250 Accepted',
      '250 Accepted',
      '450 4.7.1 Daily recipient limit of this key reached, try again later',
      '250 2.0.0 queued',
    ]);
    // Instance two: the hour's three messages are used.
    expect(await send(b, ['r8@example.net'])).toEqual(['450 4.7.1 Hourly message limit of this key reached, try again later']);
    a.destroy();
    b.destroy();

    expect(delivered.slice(-3)).toEqual([['r1@example.net', 'r2@example.net'], ['r4@example.net', 'r5@example.net'], ['r6@example.net']]);
    const refusals = harnesses.flatMap((h) => h.logs.filter((l) => l.msg === 'sending limit'));
    expect(refusals.map((l) => l.reason).sort()).toEqual(['messages_per_hour', 'recipients_per_day', 'recipients_per_message']);
    for (const l of refusals) expect(l).toMatchObject({ audit: true, protocol: 'smtp', account: ALICE, keyId: record.id, result: 'refused' });
  });

  it('lets concurrent senders on both instances through the hourly limit exactly, no more', async () => {
    const { key } = await issueKey(harnesses[0]!.store, 'operator', { name: 'burst', account: ALICE, scopes: ['smtp'], limits: { messagesPerHour: 5 } });
    const before = delivered.length;
    const results = await Promise.allSettled(
      Array.from({ length: 12 }, (_, i) => {
        const transport = nodemailer.createTransport({ host: '127.0.0.1', port: (i % 2 ? one : two).port('smtp'), secure: false, ignoreTLS: true, auth: { user: ALICE, pass: key } });
        return transport.sendMail({ from: ALICE, to: `burst${i}@example.net`, subject: `n${i}`, text: 'x' }).finally(() => transport.close());
      }),
    );
    const sent = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(sent).toHaveLength(5);
    expect(refused).toHaveLength(7);
    for (const r of refused) expect(String((r.reason as { response?: string }).response)).toMatch(/^450 4\.7\.1 Hourly message limit/);
    expect(delivered.length - before).toBe(5);
  });

  it('a key without limits is not limited, and a leak report to one instance ends its IMAP session on the other', async () => {
    const { key, record } = await issueKey(harnesses[0]!.store, 'operator', { name: 'laptop', account: ALICE, scopes: ['smtp', 'imap'] });
    const s = await smtp(two, key);
    for (let i = 0; i < 3; i++) expect((await send(s, [`free${i}a@example.net`, `free${i}b@example.net`, `free${i}c@example.net`])).at(-1)).toBe('250 2.0.0 queued');
    s.destroy();
    const imap = await LineClient.connect(two.port('imap'));
    await imap.line();
    expect(await imap.command('a', `LOGIN ${ALICE} ${key}`)).toMatch(/^a OK /);
    const body = JSON.stringify([{ token: key, type: 'keygate_api_key', url: 'https://paste.example/1', source: 'content' }]);
    const started = Date.now();
    const res = await fetch(`http://127.0.0.1:${one.port('http')}/api/leaks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'keygate-signature': `sha256=${createHmac('sha256', HMAC_SECRET).update(body).digest('hex')}` },
      body,
    });
    expect(res.status).toBe(200);
    expect(await imap.line(1000)).toBe('* BYE Session revoked');
    expect(Date.now() - started).toBeLessThan(1000);
    expect((await harnesses[1]!.store.getKey(record.id))!.revokedAt).not.toBeNull();
  });
});
