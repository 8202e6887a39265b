import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey } from '../../src/keys/format.js';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

/*
 * Captures every log line (level trace) of a full workflow that carries keys
 * in Authorization headers, in ?access_token=, in responses and in refused
 * requests, then greps the text for each secret. Some secrets are not
 * key-shaped on purpose: the logger's last-resort scrubber only knows the key
 * pattern, so these prove the header and query redaction themselves.
 */
describe.each(storeKinds())('no key in the logs on %s', (kind) => {
  let f: Fixture;
  const secrets: string[] = [];
  const keep = (s: string): string => {
    secrets.push(s);
    return s;
  };

  beforeAll(async () => {
    f = await createFixture(kind, { logLevel: 'trace' });
    keep(f.adminKey);
  });
  afterAll(() => f.close());

  it('a full workflow logs requests but never a key', async () => {
    const admin = f.adminKey;
    const q = (key: string) => `access_token=${encodeURIComponent(key)}`;

    const issued = await f.call(admin, { method: 'POST', url: '/api/tokens', payload: { description: 'user', scopes: ['app'], account: 'alice@example.com' } });
    const user = keep(issued.json().token as string);
    expect((await f.call(null, { url: `/api/smtp-credentials?${q(user)}` })).statusCode).toBe(200);
    expect((await f.call(user, { url: '/api/smtp-credentials' })).statusCode).toBe(200);

    const created = await f.call(null, { method: 'POST', url: `/api/smtp-credentials?${q(user)}`, payload: { name: 'Thunderbird', scopes: ['smtp', 'imap'] } });
    const thunderbird = keep(created.json().apiKey as string);
    const rotated = await f.call(null, { method: 'POST', url: `/api/smtp-credentials/${created.json().id}/rotate?${q(user)}&x=1` });
    keep(rotated.json().apiKey as string);
    const mobile = await f.call(user, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: { name: 'iPhone', platform: 'ios', deviceId: 'd1' } });
    keep(mobile.json().apiKey as string);
    expect((await f.call(null, { method: 'DELETE', url: `/api/smtp-credentials/${mobile.json().id}?${q(user)}` })).statusCode).toBe(204);

    // Refused: the old (rotated) key, unknown keys, junk that is not key-shaped, another auth scheme.
    const unknown = keep(generateKey());
    const junk = keep(`S3cret-${Math.random().toString(36).slice(2)}-not-key-shaped`);
    const junk2 = keep(`Another-${Math.random().toString(36).slice(2)}-secret`);
    expect((await f.call(thunderbird, { url: '/api/smtp-credentials' })).statusCode).toBe(401);
    expect((await f.call(unknown, { url: '/api/smtp-credentials' })).statusCode).toBe(401);
    expect((await f.call(null, { url: `/api/smtp-credentials?${q(unknown)}` })).statusCode).toBe(401);
    expect((await f.call(junk, { url: '/api/smtp-credentials' })).statusCode).toBe(401);
    expect((await f.call(null, { url: `/metrics?${q(junk2)}` })).statusCode).toBe(401);
    expect((await f.call(null, { url: '/api/tokens', headers: { authorization: `Basic ${Buffer.from(`a:${junk}`).toString('base64')}` } })).statusCode).toBe(401);
    expect((await f.call(null, { url: '/api/tokens', headers: { authorization: `Token ${junk2}` } })).statusCode).toBe(401);
    // Errors after authentication, with the key in the query: 400, 404, 413, 403.
    expect((await f.call(null, { method: 'POST', url: `/api/smtp-credentials?${q(user)}`, payload: { name: '' } })).statusCode).toBe(400);
    expect((await f.call(null, { url: `/api/nothing?${q(user)}` })).statusCode).toBe(404);
    expect((await f.call(null, { method: 'POST', url: `/api/smtp-credentials?${q(user)}`, payload: { pad: 'x'.repeat(f.config.http.bodyLimit) } })).statusCode).toBe(413);
    expect((await f.call(null, { url: `/metrics?${q(user)}` })).statusCode).toBe(403);
    // Metrics scrape and a real socket too.
    expect((await f.call(admin, { url: '/metrics' })).statusCode).toBe(200);
    await f.app.listen({ host: '127.0.0.1', port: 0 });
    const port = (f.app.server.address() as { port: number }).port;
    expect((await fetch(`http://127.0.0.1:${port}/api/smtp-credentials?${q(user)}`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/api/smtp-credentials`, { headers: { Authorization: `Bearer ${junk}` } })).status).toBe(401);

    await f.store.flushTouches();
    await new Promise((r) => setTimeout(r, 50));
    const text = f.logs.join('');

    // The workflow was logged…
    expect(f.logs.length).toBeGreaterThan(40);
    expect(text).toContain('incoming request');
    expect(text).toContain('request completed');
    expect(text).toContain('auth attempt');
    expect(text).toContain('access_token=[REDACTED]');
    // …and no secret is in it, nor anything key-shaped, nor even the scrubber's mark
    // (which would mean a key reached the logger and only the last-resort filter caught it).
    for (const s of secrets) {
      expect(text.includes(s), `secret ${s.slice(0, 6)}… in logs`).toBe(false);
      expect(text.includes(encodeURIComponent(s)), `encoded secret ${s.slice(0, 6)}… in logs`).toBe(false);
    }
    expect(text).not.toMatch(/kg_[0-9A-Za-z]{49}/);
    expect(text).not.toContain('kg_[REDACTED]');
    expect(text.toLowerCase()).not.toMatch(/"authorization":"(bearer|basic|token) /);
  });

  it('every spelling of ?access_token= and of its value: the key works, and is in no log line in any encoding', async () => {
    const key = (await f.issue({ scopes: ['app'], account: 'spell@example.com' })).key;
    const hex = (t: string, upper: boolean) => [...Buffer.from(t)].map((b) => `%${b.toString(16).padStart(2, '0')[upper ? 'toUpperCase' : 'toLowerCase']()}`).join('');
    const names = ['access_token', 'access%5Ftoken', 'access%5ftoken', '%61ccess_token', hex('access_token', true)];
    const values = [key, hex(key, true), hex(key, false), key.replace('_', '%5F')];
    const from = f.logs.length;
    for (const name of names) {
      for (const value of values) {
        const res = await f.call(null, { url: `/api/smtp-credentials?${name}=${value}` });
        expect(res.statusCode, `${name}=${value.slice(0, 9)}`).toBe(200);
      }
    }
    // Refused spellings (the parser ignores them) carry the key too; and a key in a path.
    expect((await f.call(null, { url: `/api/smtp-credentials?ACCESS_TOKEN=${hex(key, true)}` })).statusCode).toBe(401);
    expect((await f.call(f.adminKey, { url: `/api/tokens/${hex(key, true)}/export` })).statusCode).toBe(404);
    await new Promise((r) => setTimeout(r, 50));
    const text = f.logs.slice(from).join('');
    expect(text).toContain('access_token=[REDACTED]');
    for (const form of [key, key.slice(3), Buffer.from(key).toString('base64'), Buffer.from(key).toString('base64url'), encodeURIComponent(key), hex(key, true), hex(key, false), key.replace('_', '%5F')]) {
      expect(text.includes(form), `${form.slice(0, 12)}… in the logs`).toBe(false);
    }
  });
});
