/**
 * The HTTP API's keys go through the same login path as the mail listeners
 * (Authenticator.logIn, started by startServer): a refused key is answered
 * after the failure delay and audited, keys are counted by the same login
 * limits (a limited client gets 429 on HTTP, and a temporary refusal on IMAP),
 * and the client's User-Agent is kept with the attempt.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { generateKey } from '../../src/keys/format.js';
import { startKeygate, type SingleKeygate } from '../helpers/keygate.js';
import { LineClient } from '../helpers/line-client.js';

const DELAY_MS = 300;
const IP_FAILURES = 4;

let kg: SingleKeygate;
let adminKey: string;

async function start(flags: Record<string, unknown>): Promise<void> {
  kg = await startKeygate({ http: true, flags: { 'auth.ipFailures': IP_FAILURES, 'auth.accountFailures': 100, ...flags } });
  adminKey = (await kg.issue(null, ['*'])).key;
}

afterEach(async () => {
  await kg.close();
});

function get(key: string, path = '/api/tokens'): Promise<Response> {
  return fetch(`http://127.0.0.1:${kg.port('http')}${path}`, { headers: { authorization: `Bearer ${key}`, 'user-agent': 'keygate-test/1.0' } });
}

describe('keys on the HTTP API', () => {
  it('answers a good key at once, and a refused one after the failure delay, audited with the User-Agent', async () => {
    await start({ 'auth.failureDelay': `${DELAY_MS}ms` });
    let started = performance.now();
    expect((await get(adminKey)).status).toBe(200);
    expect(performance.now() - started).toBeLessThan(DELAY_MS);

    const audits = kg.audits().length;
    started = performance.now();
    const refused = await get(generateKey());
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toBe('Bearer realm="keygate"');
    expect(performance.now() - started).toBeGreaterThanOrEqual(DELAY_MS - 5);
    expect(kg.audits().slice(audits)).toEqual([
      expect.objectContaining({ protocol: 'http', ip: '127.0.0.1', result: 'failure', reason: 'unknown_key', client: { name: 'keygate-test/1.0' } }),
    ]);
  });

  it('counts refused keys in the login limits shared with the mail listeners: 429 on HTTP, a temporary refusal on IMAP', async () => {
    await start({ 'auth.failureDelay': '5ms' });
    for (let i = 0; i < IP_FAILURES; i++) expect((await get(generateKey())).status).toBe(401);
    const limited = await get(adminKey);
    expect(limited.status).toBe(429);
    expect(((await limited.json()) as { error: { code: string } }).error.code).toBe('rate_limited');

    const imap = await LineClient.connect(kg.port('imap'));
    await imap.line();
    expect(await imap.command('a', `LOGIN alice@example.com ${generateKey()}`)).toBe('a NO [UNAVAILABLE] Temporary authentication failure, try again later');
    imap.destroy();
  });
});
