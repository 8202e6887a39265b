import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY_RE } from '../../src/keys/format.js';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

const run = promisify(execFile);
afterAll(cleanupFixtures);

/** Runs a shell command line as a user would type it. */
async function sh(cmd: string): Promise<string> {
  const { stdout } = await run('sh', ['-c', cmd], { timeout: 15_000 });
  return stdout;
}

const haveJq = await run('sh', ['-c', 'command -v jq']).then(
  () => true,
  () => false,
);

/*
 * The reference examples (002/003: Bearer header, ?access_token=, /metrics;
 * 004: the curl line of each route), typed as in the documents, against a
 * real listening server with real Keygate keys. Keygate has no /v1/stats, so
 * 002's request examples go to /api/smtp-credentials.
 */
describe.each(storeKinds())('over a real port on %s', (kind) => {
  let f: Fixture;
  let port: number;
  let user: string;
  let prometheus: string;

  beforeAll(async () => {
    f = await createFixture(kind);
    await f.app.listen({ host: '127.0.0.1', port: 0 });
    port = (f.app.server.address() as { port: number }).port;
    user = (await f.issue({ name: 'user', scopes: ['app'], account: 'alice@example.com' })).key;
    prometheus = (await f.issue({ name: 'prometheus', scopes: ['metrics'] })).key;
  });
  afterAll(() => f.close());

  describe('reference 002/003', () => {
    it('curl with the Bearer header', async () => {
      const out = await sh(`curl http://127.0.0.1:${port}/api/smtp-credentials -H "Authorization: Bearer ${user}"`);
      expect(JSON.parse(out)).toHaveProperty('connectionInfo.smtp.serverName', 'mail.example.test');
    });

    it('curl with ?access_token=', async () => {
      const out = await sh(`curl http://127.0.0.1:${port}/api/smtp-credentials?access_token=${user}`);
      expect(JSON.parse(out).keys.length).toBeGreaterThan(0);
    });

    it('curl /metrics with a metrics-scoped key', async () => {
      const out = await sh(`curl http://127.0.0.1:${port}/metrics -H "Authorization: Bearer ${prometheus}"`);
      expect(out).toMatch(/^# HELP /m);
      expect(out).toMatch(/^# TYPE keygate_auth_attempts_total counter$/m);
    });

    it('a Prometheus-style scrape (authorization: type Bearer) with fetch', async () => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { Authorization: `Bearer ${prometheus}` } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(await res.text()).toContain('keygate_http_requests_total');
    });

    it('without a key: 401, WWW-Authenticate: Bearer', async () => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect(await res.json()).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
    });
  });

  describe('reference 004 curl lines', () => {
    const jq = haveJq ? ' | jq' : '';

    it('list, create, rotate, revoke', async () => {
      const base = `http://localhost:${port}`;
      const list = JSON.parse(await sh(`curl -s "${base}/api/smtp-credentials" \\\n  -H "Authorization: Bearer ${user}"${jq}`));
      expect(Object.keys(list).sort()).toEqual(['connectionInfo', 'keys']);

      const created = JSON.parse(
        await sh(
          `curl -s -X POST "${base}/api/smtp-credentials" \\\n  -H "Authorization: Bearer ${user}" \\\n  -H "Content-Type: application/json" \\\n  -d '{"name": "Thunderbird", "scopes": ["smtp", "pop3", "imap"]}'${jq}`,
        ),
      );
      expect(created).toMatchObject({ name: 'Thunderbird', isActive: true, lastUsedAt: null });
      expect(created.apiKey).toMatch(KEY_RE);

      const rotated = JSON.parse(await sh(`curl -s -X POST "${base}/api/smtp-credentials/${created.id}/rotate" \\\n  -H "Authorization: Bearer ${user}"${jq}`));
      expect(rotated).toMatchObject({ name: 'Thunderbird', scopes: created.scopes });
      expect(rotated.apiKey).toMatch(KEY_RE);

      const del = await sh(`curl -s -o /dev/null -w '%{http_code}' -X DELETE "${base}/api/smtp-credentials/${rotated.id}" \\\n  -H "Authorization: Bearer ${user}"`);
      expect(del).toBe('204');

      const mobile = JSON.parse(
        await sh(
          `curl -s -X POST "${base}/api/smtp-credentials/mobile" -H "Authorization: Bearer ${user}" -H "Content-Type: application/json" -d '{"name": "iPhone 15", "platform": "ios", "deviceId": "device-identifier"}'`,
        ),
      );
      expect(mobile).toMatchObject({ name: 'iPhone 15', platform: 'ios', deviceId: 'device-identifier' });
    });

    it('the status line and headers of a create', async () => {
      const head = await sh(
        `curl -s -D - -o /dev/null -X POST "http://127.0.0.1:${port}/api/smtp-credentials" -H "Authorization: Bearer ${user}" -H "Content-Type: application/json" -d '{"name":"x","scopes":["smtp"]}'`,
      );
      expect(head).toMatch(/^HTTP\/1\.1 201 /);
      expect(head.toLowerCase()).toContain('cache-control: no-store');
      expect(head.toLowerCase()).toMatch(/x-ratelimit-limit: \d+/);
    });
  });
});
