import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey } from '../../src/keys/format.js';
import { SCOPES } from '../../src/keys/scopes.js';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

const ALICE = 'alice@example.com';
const BOB = 'bob@example.com';

function expect401(res: { statusCode: number; headers: Record<string, unknown>; json(): unknown }): void {
  expect(res.statusCode).toBe(401);
  expect(String(res.headers['www-authenticate'])).toMatch(/^Bearer\b/);
  expect(res.json()).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
}

describe.each(storeKinds())('HTTP authentication on %s', (kind) => {
  let f: Fixture;
  beforeAll(async () => {
    // Every scope × route case below issues keys for alice: more than the default key limit.
    f = await createFixture(kind, { flags: { 'limits.keysPerAccount': 1000 } });
  });
  afterAll(() => f.close());

  describe('401 with WWW-Authenticate: Bearer and the JSON error shape', () => {
    it('missing key', async () => {
      expect401(await f.call(null, { url: '/api/smtp-credentials' }));
    });

    it.each([
      ['not a key', 'hunter2'],
      ['wrong prefix', `xx_${generateKey().slice(3)}`],
      ['bad checksum', `${generateKey().slice(0, -1)}${generateKey().endsWith('A') ? 'B' : 'A'}`],
      ['too short', generateKey().slice(0, 20)],
    ])('malformed key (%s)', async (_what, key) => {
      expect401(await f.call(key, { url: '/api/smtp-credentials' }));
      expect401(await f.call(null, { url: `/api/smtp-credentials?access_token=${encodeURIComponent(key)}` }));
    });

    it('unknown key (well-formed, not in the store)', async () => {
      expect401(await f.call(generateKey(), { url: '/api/smtp-credentials' }));
    });

    it('revoked key', async () => {
      const k = await f.issue({ scopes: ['app'], account: ALICE });
      await f.store.revokeKey(k.record.id, new Date().toISOString());
      expect401(await f.call(k.key, { url: '/api/smtp-credentials' }));
    });

    it('expired key', async () => {
      const k = await f.issue({ scopes: ['app'], account: ALICE, expiresAt: new Date(Date.now() + 1000).toISOString() });
      expect((await f.call(k.key, { url: '/api/smtp-credentials' })).statusCode).toBe(200);
      await new Promise((r) => setTimeout(r, 1050));
      expect401(await f.call(k.key, { url: '/api/smtp-credentials' }));
    });

    it('another scheme in Authorization (Basic) is not a Bearer key', async () => {
      const k = await f.issue({ scopes: ['app'], account: ALICE });
      expect401(await f.call(null, { url: '/api/smtp-credentials', headers: { authorization: `Basic ${Buffer.from(`${ALICE}:${k.key}`).toString('base64')}` } }));
    });

    it('on every authenticated route, the same answer', async () => {
      for (const [method, url] of [
        ['GET', '/metrics'],
        ['GET', '/api/accounts'],
        ['GET', '/api/tokens'],
        ['DELETE', '/api/smtp-credentials/x'],
        ['POST', `/api/accounts/${ALICE}/smtp-credentials/x/rotate`],
      ] as const) {
        expect401(await f.call(generateKey(), { method, url }));
      }
    });
  });

  describe('Bearer header and ?access_token=', () => {
    it('both carry the key; the header wins when both are present', async () => {
      const k = await f.issue({ scopes: ['api:read'], account: ALICE });
      expect((await f.call(k.key, { url: '/api/smtp-credentials' })).statusCode).toBe(200);
      expect((await f.call(null, { url: `/api/smtp-credentials?access_token=${k.key}` })).statusCode).toBe(200);
      expect((await f.call(null, { url: `/api/smtp-credentials?access_token=${k.key}`, headers: { authorization: 'Bearer nonsense' } })).statusCode).toBe(401);
      expect((await f.call(null, { url: '/api/smtp-credentials', headers: { authorization: `bearer   ${k.key}` } })).statusCode).toBe(200);
    });
  });

  describe('public routes', () => {
    it('/health, /openapi.json and /docs need no key', async () => {
      expect((await f.call(null, { url: '/health' })).statusCode).toBe(200);
      expect((await f.call(null, { url: '/openapi.json' })).statusCode).toBe(200);
      expect((await f.call(null, { url: '/docs' })).statusCode).toBe(200);
      expect((await f.call(null, { url: '/docs/json' })).statusCode).toBe(200);
    });
  });

  describe('allowedIps', () => {
    it('a key limited to addresses works from them only: 403 elsewhere', async () => {
      const k = await f.issue({ scopes: ['api:read'], account: ALICE, allowedIps: ['10.0.0.0/8', '2001:db8::/32'] });
      expect((await f.call(k.key, { url: '/api/smtp-credentials', remoteAddress: '10.20.30.40' })).statusCode).toBe(200);
      expect((await f.call(k.key, { url: '/api/smtp-credentials', remoteAddress: '2001:db8::7' })).statusCode).toBe(200);
      const refused = await f.call(k.key, { url: '/api/smtp-credentials', remoteAddress: '192.0.2.1' });
      expect(refused.statusCode).toBe(403);
      expect(refused.json().error.code).toBe('forbidden');
      expect((await f.call(k.key, { url: '/api/smtp-credentials', remoteAddress: '127.0.0.1' })).statusCode).toBe(403);
    });
  });

  describe('account state', () => {
    it('disabling an account makes its keys fail at once; enabling restores them', async () => {
      const acct = 'dora@example.com';
      const k = await f.issue({ scopes: ['app'], account: acct });
      expect((await f.call(k.key, { url: '/api/smtp-credentials' })).statusCode).toBe(200);
      const off = await f.call(f.adminKey, { method: 'PATCH', url: `/api/accounts/${acct}`, payload: { disabled: true } });
      expect(off.statusCode).toBe(200);
      expect401(await f.call(k.key, { url: '/api/smtp-credentials' }));
      await f.call(f.adminKey, { method: 'PATCH', url: `/api/accounts/${acct}`, payload: { disabled: false } });
      expect((await f.call(k.key, { url: '/api/smtp-credentials' })).statusCode).toBe(200);
    });

    it('deleting an account revokes its keys', async () => {
      const acct = 'eve@example.com';
      const k = await f.issue({ scopes: ['app'], account: acct });
      expect((await f.call(f.adminKey, { method: 'DELETE', url: `/api/accounts/${acct}` })).statusCode).toBe(204);
      expect401(await f.call(k.key, { url: '/api/smtp-credentials' }));
      expect((await f.store.getKey(k.record.id))?.revokedAt).not.toBeNull();
    });
  });

  /*
   * The scope × route matrix. Each row: a key (scope, bound to alice or
   * unbound); each column: a route; each cell: the expected status. Written
   * out by hand from DESIGN.md's scope table, not computed from the policy.
   *   c = /api/smtp-credentials…            (own account)
   *   a = /api/accounts/alice/smtp-credentials…  (account in the URL)
   * Columns: GET, POST create, DELETE, POST rotate, POST mobile,
   *          then GET /api/accounts, GET /api/tokens, GET /metrics.
   */
  const ROUTES = ['GET', 'POST', 'DELETE', 'ROTATE', 'MOBILE'] as const;
  const F5 = [403, 403, 403, 403, 403];
  const FULL = [200, 201, 204, 200, 201];
  const READ = [200, 403, 403, 403, 403];
  // api:write alone: may write its account's keys, within what it holds; a mobile key (smtp, imap, pop3) is more than that.
  const WRITE = [403, 201, 204, 200, 403];
  const MATRIX: Array<{ scope: string; bound: boolean; own: number[]; url: number[]; admin: [number, number, number] }> = [
    { scope: '*', bound: true, own: FULL, url: FULL, admin: [403, 403, 403] },
    { scope: 'smtp', bound: true, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: 'imap', bound: true, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: 'pop3', bound: true, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: 'api:read', bound: true, own: READ, url: READ, admin: [403, 403, 403] },
    { scope: 'api:write', bound: true, own: WRITE, url: WRITE, admin: [403, 403, 403] },
    { scope: 'app', bound: true, own: FULL, url: FULL, admin: [403, 403, 403] },
    { scope: 'internal', bound: true, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: 'metrics', bound: true, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: 'introspect', bound: true, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: '*', bound: false, own: F5, url: FULL, admin: [200, 200, 200] },
    { scope: 'smtp', bound: false, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: 'imap', bound: false, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: 'pop3', bound: false, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: 'api:read', bound: false, own: F5, url: READ, admin: [200, 200, 403] },
    // Unbound api:write alone is no administrator: nothing to write.
    { scope: 'api:write', bound: false, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: 'app', bound: false, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: 'internal', bound: false, own: F5, url: F5, admin: [403, 403, 403] },
    { scope: 'metrics', bound: false, own: F5, url: F5, admin: [403, 403, 200] },
    { scope: 'introspect', bound: false, own: F5, url: F5, admin: [403, 403, 403] },
  ];

  it('the matrix covers every scope, bound and unbound', () => {
    for (const s of SCOPES) for (const bound of [true, false]) expect(MATRIX.some((r) => r.scope === s && r.bound === bound)).toBe(true);
  });

  describe.each(MATRIX)('scope $scope, bound=$bound', ({ scope, bound, own, url, admin }) => {
    const callAll = async (key: string, base: string): Promise<number[]> => {
      const target = () => f.issue({ name: 'target', scopes: ['api:write'], account: ALICE });
      const codes: number[] = [];
      for (const route of ROUTES) {
        let res;
        switch (route) {
          case 'GET':
            res = await f.call(key, { url: base });
            break;
          case 'POST':
            res = await f.call(key, { method: 'POST', url: base, payload: { name: 'm', scopes: ['api:write'] } });
            break;
          case 'DELETE':
            res = await f.call(key, { method: 'DELETE', url: `${base}/${(await target()).record.id}` });
            break;
          case 'ROTATE':
            res = await f.call(key, { method: 'POST', url: `${base}/${(await target()).record.id}/rotate` });
            break;
          case 'MOBILE':
            res = await f.call(key, { method: 'POST', url: `${base}/mobile`, payload: { name: 'm', platform: 'ios', deviceId: `d-${scope}-${bound}` } });
            break;
        }
        if (res.statusCode >= 400) {
          expect(res.json().error.code).toBe(res.statusCode === 403 ? 'forbidden' : res.json().error.code);
        }
        codes.push(res.statusCode);
      }
      return codes;
    };

    it('own-account routes', async () => {
      const k = await f.issue({ scopes: [scope], account: bound ? ALICE : null });
      expect(await callAll(k.key, '/api/smtp-credentials')).toEqual(own);
    });

    it('account-in-URL routes, for alice', async () => {
      const k = await f.issue({ scopes: [scope], account: bound ? ALICE : null });
      expect(await callAll(k.key, `/api/accounts/${ALICE}/smtp-credentials`)).toEqual(url);
    });

    if (bound) {
      it('account-in-URL routes, for another account: 403 throughout', async () => {
        await f.issue({ scopes: ['smtp'], account: BOB });
        const k = await f.issue({ scopes: [scope], account: ALICE });
        expect(await callAll(k.key, `/api/accounts/${BOB}/smtp-credentials`)).toEqual(F5);
      });
    }

    it('accounts, tokens, metrics', async () => {
      const k = await f.issue({ scopes: [scope], account: bound ? ALICE : null });
      const codes = [];
      for (const u of ['/api/accounts', '/api/tokens', '/metrics']) codes.push((await f.call(k.key, { url: u })).statusCode);
      expect(codes).toEqual(admin);
    });
  });

  it('403 names the missing scope', async () => {
    const k = await f.issue({ scopes: ['api:read'], account: ALICE });
    const res = await f.call(k.key, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: ['api:read'] } });
    expect(res.statusCode).toBe(403);
    expect(res.json().error).toEqual({ code: 'forbidden', message: expect.stringContaining('"api:write"'), details: { missingScope: 'api:write' } });
    const m = await f.call((await f.issue({ scopes: ['api'] })).key, { url: '/metrics' });
    expect(m.json().error.details).toEqual({ missingScope: 'metrics' });
  });
});
