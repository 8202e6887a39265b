import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../helpers/free-port.js';
import { createHarness, type Harness, type Keygate } from '../../helpers/keygate.js';
import { b64, SaslClient } from '../../helpers/sasl-client.js';

const ALICE = 'alice@example.com';
const FAILURE_DELAY_MS = 150;
const plainResp = (user: string, key: string, authzid = ''): string => b64(`${authzid}\0${user}\0${key}`);
const bearer = (user: string, key: string): string => b64(`n,a=${user},\x01host=mail.example.com\x01port=587\x01auth=Bearer ${key}\x01\x01`);
const xoauth2 = (user: string, key: string): string => b64(`user=${user}\x01auth=Bearer ${key}\x01\x01`);
const postfixAuth = (id: number, mech: string, rest: string[] = []): string[] => ['AUTH', String(id), mech, 'service=smtp', 'nologin', 'lip=127.0.0.1', 'rip=192.0.2.10', 'secured', ...rest];

let h: Harness;
let kg: Keygate;
let port: number;
let socketPath: string;
let aliceKey: string;

beforeAll(async () => {
  h = await createHarness();
  port = await freePort();
  socketPath = join(h.dir, 'sasl.sock');
  kg = await h.start({
    protocols: [],
    flags: { 'saslServer.port': port, 'saslServer.socket': socketPath, 'auth.failureDelay': `${FAILURE_DELAY_MS}ms`, 'limits.loginTimeout': '1s' },
  });
  aliceKey = (await h.issue(ALICE, ['smtp'])).key;
});
afterAll(async () => {
  await h?.close();
});

async function client(): Promise<SaslClient> {
  return (await SaslClient.handshaken(port)).client;
}

describe('handshake', () => {
  it('sends VERSION 1, the four mechanisms (plaintext), SPID, a CUID per connection, a COOKIE, DONE', async () => {
    const a = await SaslClient.handshaken(port);
    const b = await SaslClient.handshaken(port);
    expect(a.handshake.slice(0, 5)).toEqual(['VERSION\t1\t2', 'MECH\tPLAIN\tplaintext', 'MECH\tLOGIN\tplaintext', 'MECH\tOAUTHBEARER\tplaintext', 'MECH\tXOAUTH2\tplaintext']);
    expect(a.handshake[5]).toBe(`SPID\t${process.pid}`);
    expect(a.handshake[6]).toMatch(/^CUID\t\d+$/);
    expect(Number(b.handshake[6]!.split('\t')[1])).toBeGreaterThan(Number(a.handshake[6]!.split('\t')[1]));
    expect(a.handshake[7]).toMatch(/^COOKIE\t[0-9a-f]{32}$/);
    expect(a.handshake[8]).toBe('DONE');
    a.client.destroy();
    b.client.destroy();
  });
});

describe('AUTH', () => {
  it('PLAIN with a key: OK user=<account>, audited as an SMTP login from rip', async () => {
    const c = await client();
    expect(await c.send(...postfixAuth(1, 'PLAIN', [`resp=${plainResp(ALICE, aliceKey)}`]))).toEqual(['OK', '1', `user=${ALICE}`]);
    expect(h.audits().at(-1)).toMatchObject({ protocol: 'smtp', ip: '192.0.2.10', account: ALICE, result: 'success' });
    c.destroy();
  });

  it('a wrong key: FAIL with the one reason, after the failure delay, audited with why', async () => {
    const c = await client();
    const t0 = performance.now();
    expect(await c.send(...postfixAuth(1, 'PLAIN', [`resp=${plainResp(ALICE, 'kg_not_a_real_key')}`]))).toEqual(['FAIL', '1', `user=${ALICE}`, 'reason=Authentication failed']);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(FAILURE_DELAY_MS - 5);
    expect(h.audits().at(-1)).toMatchObject({ protocol: 'smtp', ip: '192.0.2.10', result: 'failure', reason: 'malformed' });
    c.destroy();
  });

  it('a key typed as the username is masked in the audit line, and no log line carries it', async () => {
    const c = await client();
    expect((await c.send(...postfixAuth(1, 'PLAIN', [`resp=${plainResp(aliceKey, aliceKey)}`])))[0]).toBe('FAIL');
    expect(h.audits().at(-1)).toMatchObject({ protocol: 'smtp', account: 'kg_[REDACTED]', result: 'failure', reason: 'unknown_account' });
    expect(JSON.stringify(h.logs)).not.toContain(aliceKey);
    c.destroy();
  });

  it('a revoked key is refused like any other', async () => {
    const { key, id } = await h.issue(ALICE, ['smtp']);
    await h.store.revokeKey(id, new Date().toISOString());
    const c = await client();
    expect((await c.send(...postfixAuth(1, 'PLAIN', [`resp=${plainResp(ALICE, key)}`])))[0]).toBe('FAIL');
    expect(h.audits().at(-1)).toMatchObject({ keyId: id, result: 'failure', reason: 'revoked' });
    c.destroy();
  });

  it('the service decides the scope: an IMAP-only key logs in for service=imap, not for service=smtp', async () => {
    const { key } = await h.issue(ALICE, ['imap']);
    const c = await client();
    expect((await c.send('AUTH', '1', 'PLAIN', 'service=smtp', 'rip=127.0.0.1', `resp=${plainResp(ALICE, key)}`))[0]).toBe('FAIL');
    expect(h.audits().at(-1)).toMatchObject({ protocol: 'smtp', reason: 'missing_scope' });
    expect(await c.send('AUTH', '2', 'PLAIN', 'service=imap', 'rip=127.0.0.1', `resp=${plainResp(ALICE, key)}`)).toEqual(['OK', '2', `user=${ALICE}`]);
    expect(h.audits().at(-1)).toMatchObject({ protocol: 'imap', result: 'success' });
    c.destroy();
  });

  it('PLAIN without an initial response: an empty CONT, then the response', async () => {
    const c = await client();
    expect(await c.send(...postfixAuth(1, 'PLAIN'))).toEqual(['CONT', '1', '']);
    expect(await c.send('CONT', '1', plainResp(ALICE, aliceKey))).toEqual(['OK', '1', `user=${ALICE}`]);
    c.destroy();
  });

  it('LOGIN: Username: and Password: prompts, then OK', async () => {
    const c = await client();
    expect(await c.send(...postfixAuth(1, 'LOGIN'))).toEqual(['CONT', '1', 'VXNlcm5hbWU6']);
    expect(await c.send('CONT', '1', b64(ALICE))).toEqual(['CONT', '1', 'UGFzc3dvcmQ6']);
    expect(await c.send('CONT', '1', b64(aliceKey))).toEqual(['OK', '1', `user=${ALICE}`]);
    c.destroy();
  });

  it('PLAIN whose authzid names someone else is refused and audited as such', async () => {
    const c = await client();
    expect((await c.send(...postfixAuth(1, 'PLAIN', [`resp=${plainResp(ALICE, aliceKey, 'bob@example.com')}`])))[0]).toBe('FAIL');
    expect(h.audits().at(-1)).toMatchObject({ result: 'failure', reason: 'authzid_mismatch' });
    c.destroy();
  });

  it('OAUTHBEARER and XOAUTH2 with a key as the bearer token', async () => {
    const c = await client();
    expect(await c.send(...postfixAuth(1, 'OAUTHBEARER', [`resp=${bearer(ALICE, aliceKey)}`]))).toEqual(['OK', '1', `user=${ALICE}`]);
    expect(await c.send(...postfixAuth(2, 'XOAUTH2', [`resp=${xoauth2(ALICE, aliceKey)}`]))).toEqual(['OK', '2', `user=${ALICE}`]);
    c.destroy();
  });

  it('a refused bearer token: the RFC 7628 error challenge after the failure delay, then FAIL', async () => {
    const c = await client();
    const t0 = performance.now();
    const [cmd, id, challenge] = await c.send(...postfixAuth(1, 'OAUTHBEARER', [`resp=${bearer(ALICE, 'kg_wrong')}`]));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(FAILURE_DELAY_MS - 5);
    expect([cmd, id]).toEqual(['CONT', '1']);
    expect(JSON.parse(Buffer.from(challenge!, 'base64').toString())).toEqual({ status: 'invalid_token' });
    expect((await c.send('CONT', '1', 'AQ=='))[0]).toBe('FAIL');
    const [, , xchallenge] = await c.send(...postfixAuth(2, 'XOAUTH2', [`resp=${xoauth2(ALICE, 'kg_wrong')}`]));
    expect(JSON.parse(Buffer.from(xchallenge!, 'base64').toString())).toEqual({ status: '401', schemes: 'bearer' });
    expect((await c.send('CONT', '2', ''))[0]).toBe('FAIL');
    c.destroy();
  });

  it('a malformed SASL message is a FAIL (audited), not a closed connection', async () => {
    const c = await client();
    expect((await c.send(...postfixAuth(1, 'PLAIN', ['resp=!!notbase64'])))[0]).toBe('FAIL');
    expect(h.audits().at(-1)).toMatchObject({ result: 'failure', reason: 'malformed' });
    expect(await c.send(...postfixAuth(2, 'PLAIN', [`resp=${plainResp(ALICE, aliceKey)}`]))).toEqual(['OK', '2', `user=${ALICE}`]);
    c.destroy();
  });

  it('answers requests on one connection by id, whichever finishes first', async () => {
    const c = await client();
    c.write(`${postfixAuth(1, 'PLAIN', [`resp=${plainResp(ALICE, 'kg_wrong')}`]).join('\t')}\n`);
    c.write(`${postfixAuth(2, 'PLAIN', [`resp=${plainResp(ALICE, aliceKey)}`]).join('\t')}\n`);
    expect(await c.line()).toBe(`OK\t2\tuser=${ALICE}`);
    expect(await c.line()).toMatch(/^FAIL\t1\t/);
    c.destroy();
  });

  it('counts attempts in the metrics by the service’s protocol', async () => {
    const before = await kg.metrics.registry.getSingleMetricAsString('keygate_auth_attempts_total');
    const c = await client();
    await c.send('AUTH', '1', 'PLAIN', 'service=pop3', 'rip=127.0.0.1', `resp=${plainResp(ALICE, 'kg_wrong')}`);
    const after = await kg.metrics.registry.getSingleMetricAsString('keygate_auth_attempts_total');
    const count = (text: string): number => Number(/keygate_auth_attempts_total\{protocol="pop3",result="failure"\} (\d+)/.exec(text)?.[1] ?? 0);
    expect(count(after)).toBe(count(before) + 1);
    c.destroy();
  });
});

describe('policy around the request', () => {
  it('limits by rip: past auth.ipFailures one client address gets temporary failures, another does not', async () => {
    const p = await freePort();
    const limited = await h.start({ protocols: [], flags: { 'saslServer.port': p, 'auth.failureDelay': '10ms', 'auth.ipFailures': 4 } });
    const { client: c } = await SaslClient.handshaken(p);
    const from = (id: number, rip: string, key: string): string[] => ['AUTH', String(id), 'PLAIN', 'service=smtp', `rip=${rip}`, 'secured', `resp=${plainResp(ALICE, key)}`];
    for (let id = 1; id <= 4; id++) expect((await c.send(...from(id, '198.51.100.7', `kg_guess${id}`)))[0]).toBe('FAIL');
    expect(await c.send(...from(5, '198.51.100.7', aliceKey))).toEqual(['FAIL', '5', `user=${ALICE}`, 'code=temp_fail', 'temp', 'reason=Temporary authentication failure, try again later']);
    expect(h.audits().at(-1)).toMatchObject({ ip: '198.51.100.7', result: 'failure', reason: 'rate_limited' });
    expect(await c.send(...from(6, '198.51.100.8', aliceKey))).toEqual(['OK', '6', `user=${ALICE}`]);
    c.destroy();
    await limited.close();
  });

  it('a key restricted to addresses is checked against rip', async () => {
    const { key } = await h.issue(ALICE, ['smtp'], { allowedIps: ['203.0.113.0/24'] });
    const c = await client();
    expect((await c.send('AUTH', '1', 'PLAIN', 'service=smtp', 'rip=203.0.113.9', 'secured', `resp=${plainResp(ALICE, key)}`))[0]).toBe('OK');
    expect((await c.send('AUTH', '2', 'PLAIN', 'service=smtp', 'rip=192.0.2.99', 'secured', `resp=${plainResp(ALICE, key)}`))[0]).toBe('FAIL');
    expect(h.audits().at(-1)).toMatchObject({ ip: '192.0.2.99', reason: 'ip_not_allowed' });
    c.destroy();
  });

  it('no key before TLS: a request that is neither secured nor from loopback is refused without a check', async () => {
    const c = await client();
    const audits = h.audits().length;
    expect((await c.send('AUTH', '1', 'PLAIN', 'service=smtp', 'rip=192.0.2.20', `resp=${plainResp(ALICE, aliceKey)}`))[0]).toBe('FAIL');
    expect(h.audits().length).toBe(audits);
    expect((await c.send('AUTH', '2', 'PLAIN', 'service=smtp', 'rip=127.0.0.1', `resp=${plainResp(ALICE, aliceKey)}`))[0]).toBe('OK');
    c.destroy();
  });
});

describe('bad input ends the connection without a word', () => {
  const cases: Array<[string, string, boolean, string?]> = [
    // [what, lines sent, after the client's handshake?, what the server rightly answered before the bad line]
    ['an unknown command', 'HELLO\tthere\n', true],
    ['an oversized line', `AUTH\t1\tPLAIN\tservice=smtp\tresp=${'A'.repeat(9000)}\n`, true],
    ['an oversized line without an end', 'A'.repeat(9000), true],
    ['a reused id', `AUTH\t1\tPLAIN\tservice=smtp\trip=127.0.0.1\nAUTH\t1\tPLAIN\tservice=smtp\trip=127.0.0.1\n`, true, 'CONT\t1\t\n'],
    ['an id lower than the last', `AUTH\t5\tPLAIN\tservice=smtp\trip=127.0.0.1\nAUTH\t3\tPLAIN\tservice=smtp\trip=127.0.0.1\n`, true, 'CONT\t5\t\n'],
    ['CONT for an id never opened', 'CONT\t9\tYQ==\n', true],
    ['CONT while the request is being checked', `AUTH\t1\tPLAIN\tservice=smtp\trip=127.0.0.1\tresp=${plainResp(ALICE, 'kg_x')}\nCONT\t1\tYQ==\n`, true],
    ['an unknown mechanism', 'AUTH\t1\tCRAM-MD5\tservice=smtp\n', true],
    ['an unknown service', 'AUTH\t1\tPLAIN\tservice=ftp\n', true],
    ['AUTH before the handshake', 'AUTH\t1\tPLAIN\tservice=smtp\n', false],
    ['CPID before VERSION', 'CPID\t1\n', false],
    ['another major version', 'VERSION\t2\t0\n', false],
    ['VERSION twice', 'VERSION\t1\t2\nVERSION\t1\t2\n', false],
  ];
  for (const [what, lines, afterHandshake, before = ''] of cases) {
    it(what, async () => {
      const c = afterHandshake ? await client() : await SaslClient.connect(port);
      c.write(lines);
      const unread = await c.closedWith();
      // Nothing but the server's own handshake (when the client had not read it) came back.
      expect(unread.replace(/^VERSION\t1\t2\n(?:[A-Z]+\t[^\n]*\n)*DONE\n/, '')).toBe(before);
      expect(h.logs.some((l) => l.msg === 'SASL client sent bad input; closing')).toBe(true);
    });
  }

  it('a client that never finishes its handshake is closed after limits.loginTimeout', async () => {
    const c = await SaslClient.connect(port);
    c.write('VERSION\t1\t2\n');
    await c.closedWith(3000);
    expect(h.logs.some((l) => l.reason === 'handshake_timeout')).toBe(true);
  });
});

describe('the unix socket', () => {
  it('answers the same protocol, and is made for owner and group only', async () => {
    expect(statSync(socketPath).mode & 0o777).toBe(0o660);
    const { client: c } = await SaslClient.handshaken(socketPath);
    expect(await c.send('AUTH', '1', 'PLAIN', 'service=smtp', 'secured', 'rip=127.0.0.1', `resp=${plainResp(ALICE, aliceKey)}`)).toEqual(['OK', '1', `user=${ALICE}`]);
    c.destroy();
  });

  it('without rip, a unix-socket request has no address: an IP-restricted key is refused', async () => {
    const { key } = await h.issue(ALICE, ['smtp'], { allowedIps: ['127.0.0.1/32'] });
    const { client: c } = await SaslClient.handshaken(socketPath);
    expect((await c.send('AUTH', '1', 'PLAIN', 'service=smtp', 'secured', `resp=${plainResp(ALICE, key)}`))[0]).toBe('FAIL');
    expect(h.audits().at(-1)).toMatchObject({ reason: 'ip_not_allowed' });
    c.destroy();
  });
});

describe('settings', () => {
  it('is off by default: no SASL listener without saslServer.port or saslServer.socket', async () => {
    const other = await h.start({ protocols: [] });
    expect(other.listeners.all.map((l) => l.name)).toEqual([]);
    await other.close();
  });

  it('closes idle connections at once on shutdown, and removes its socket file', async () => {
    const p = await freePort();
    const path = join(h.dir, 'shutdown.sock');
    const other = await h.start({ protocols: [], flags: { 'saslServer.port': p, 'saslServer.socket': path } });
    const { client: c } = await SaslClient.handshaken(p);
    const t0 = performance.now();
    await other.close(5000);
    await c.closedWith(1000);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(() => statSync(path)).toThrow();
  });
});
