import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY_RE } from '../../src/keys/format.js';
import { cleanupFixtures, createFixture, errorCode, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const KEY_FIELDS = ['id', 'name', 'createdAt', 'lastUsedAt', 'isActive', 'scopes'];
const OPTIONAL_FIELDS = ['expiresAt', 'lastUsedIp', 'lastUsedProtocol', 'platform', 'deviceId'];

/** Checks a key object against reference 004: exactly these fields, never a key or hash. */
function expectKeyObject(k: Record<string, unknown>, extra: string[] = []): void {
  for (const f of KEY_FIELDS) expect(k).toHaveProperty(f);
  for (const f of Object.keys(k)) expect([...KEY_FIELDS, ...OPTIONAL_FIELDS, ...extra]).toContain(f);
  expect(k.createdAt).toMatch(ISO);
  expect(typeof k.isActive).toBe('boolean');
  expect(Array.isArray(k.scopes)).toBe(true);
  const { apiKey: _shownOnce, ...rest } = k;
  expect(JSON.stringify(rest)).not.toMatch(/kg_[0-9A-Za-z]{49}|[0-9a-f]{64}/);
}

describe.each(storeKinds())('SMTP Credentials API (reference 004) on %s', (kind) => {
  let f: Fixture;
  let owner: string; // an `app` key bound to alice
  const alice = 'alice@example.com';

  beforeAll(async () => {
    f = await createFixture(kind, {
      flags: {
        'public.smtp.serverName': 'smtp.example.com',
        'public.smtp.port': 587,
        'public.smtp.securePort': 465,
        'public.pop3.serverName': 'pop3.example.com',
        'public.pop3.port': 110,
        'public.pop3.securePort': 995,
        'public.imap.serverName': 'imap.example.com',
        'public.imap.port': 143,
        'public.imap.securePort': 993,
        'public.pop3.enabled': false,
      },
    });
    owner = (await f.issue({ name: 'owner', scopes: ['app'], account: alice })).key;
  });
  afterAll(() => f.close());

  describe('GET /api/smtp-credentials', () => {
    it('returns connectionInfo from the public settings and the active keys, 200', async () => {
      const res = await f.call(owner, { url: '/api/smtp-credentials' });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      const body = res.json();
      expect(Object.keys(body).sort()).toEqual(['connectionInfo', 'keys']);
      expect(body.connectionInfo).toEqual({
        smtp: { serverName: 'smtp.example.com', port: 587, securePort: 465, enabled: true },
        pop3: { serverName: 'pop3.example.com', port: 110, securePort: 995, enabled: false },
        imap: { serverName: 'imap.example.com', port: 143, securePort: 993, enabled: true },
      });
      expect(body.keys.length).toBeGreaterThanOrEqual(1);
      for (const k of body.keys) expectKeyObject(k);
      const self = body.keys.find((k: { name: string }) => k.name === 'owner');
      expect(self).toMatchObject({ isActive: true, scopes: ['app'] });
    });

    it('lists only active keys of the account: not revoked, not expired, not another account’s', async () => {
      const a = await f.issue({ name: 'to revoke', scopes: ['smtp'], account: alice });
      await f.store.revokeKey(a.record.id, new Date().toISOString());
      const e = await f.issue({ name: 'expiring', scopes: ['smtp'], account: alice, expiresAt: new Date(Date.now() + 1500).toISOString() });
      const other = await f.issue({ name: 'bob’s', scopes: ['smtp'], account: 'bob@example.com' });
      let ids = (await f.call(owner, { url: '/api/smtp-credentials' })).json().keys.map((k: { id: string }) => k.id);
      expect(ids).toContain(e.record.id);
      expect(ids).not.toContain(a.record.id);
      expect(ids).not.toContain(other.record.id);
      await new Promise((r) => setTimeout(r, 1600));
      ids = (await f.call(owner, { url: '/api/smtp-credentials' })).json().keys.map((k: { id: string }) => k.id);
      expect(ids).not.toContain(e.record.id);
    });

    it('shows the optional fields only where set, and lastUsed* after a use', async () => {
      const k = await f.issue({ name: 'phone', scopes: ['api:read'], account: alice, platform: 'ios', deviceId: 'dev-x', expiresAt: '2099-01-01T00:00:00Z' });
      await f.call(k.key, { url: '/api/smtp-credentials', remoteAddress: '192.0.2.7' });
      await f.store.flushTouches();
      const list = (await f.call(owner, { url: '/api/smtp-credentials' })).json().keys;
      const phone = list.find((x: { id: string }) => x.id === k.record.id);
      expect(phone).toEqual({
        id: k.record.id,
        name: 'phone',
        createdAt: k.record.createdAt,
        lastUsedAt: expect.stringMatching(ISO),
        isActive: true,
        scopes: ['api:read'],
        expiresAt: '2099-01-01T00:00:00.000Z',
        lastUsedIp: '192.0.2.7',
        lastUsedProtocol: 'http',
        platform: 'ios',
        deviceId: 'dev-x',
      });
      const plain = await f.issue({ name: 'plain', scopes: ['smtp'], account: alice });
      const again = (await f.call(owner, { url: '/api/smtp-credentials' })).json().keys.find((x: { id: string }) => x.id === plain.record.id);
      expect(Object.keys(again).sort()).toEqual([...KEY_FIELDS].sort());
      expect(again.lastUsedAt).toBeNull();
    });
  });

  describe('POST /api/smtp-credentials', () => {
    it('creates a key: 201, the reference shape, apiKey once, Cache-Control: no-store', async () => {
      const res = await f.call(owner, {
        method: 'POST',
        url: '/api/smtp-credentials',
        payload: { name: 'My Email Client', scopes: ['smtp', 'pop3', 'imap', 'api:read', 'api:write'] },
      });
      expect(res.statusCode).toBe(201);
      expect(res.headers['cache-control']).toBe('no-store');
      const body = res.json();
      expectKeyObject(body, ['apiKey']);
      expect(body).toMatchObject({ name: 'My Email Client', lastUsedAt: null, isActive: true });
      expect([...body.scopes].sort()).toEqual(['api:read', 'api:write', 'imap', 'pop3', 'smtp']);
      expect(body.apiKey).toMatch(KEY_RE);
      // The new key works, is bound to the account, and is never shown again.
      const listed = await f.call(body.apiKey, { url: '/api/smtp-credentials' });
      expect(listed.statusCode).toBe(200);
      expect(listed.body).not.toContain(body.apiKey);
      expect(listed.json().keys.find((k: { id: string }) => k.id === body.id)).not.toHaveProperty('apiKey');
      expect((await f.store.getKey(body.id))?.account).toBe(alice);
    });

    it('takes expiresAt and allowedIps', async () => {
      const res = await f.call(owner, {
        method: 'POST',
        url: '/api/smtp-credentials',
        payload: { name: 'office only', scopes: ['smtp'], expiresAt: '2099-06-01T12:00:00+02:00', allowedIps: ['10.0.0.0/8', '2001:db8::/32'] },
      });
      expect(res.statusCode).toBe(201);
      expect(res.json().expiresAt).toBe('2099-06-01T10:00:00.000Z');
      expect((await f.store.getKey(res.json().id))?.allowedIps).toEqual(['10.0.0.0/8', '2001:db8::/32']);
    });

    it('takes explicit nulls for expiresAt and allowedIps as "none" (what a list answer holds, sent back)', async () => {
      const res = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'no limits', scopes: ['smtp'], expiresAt: null, allowedIps: null } });
      expect(res.statusCode).toBe(201);
      const stored = await f.store.getKey(res.json().id);
      expect(stored?.allowedIps ?? null).toBeNull();
      expect(stored?.expiresAt ?? null).toBeNull();
    });

    it('refuses a scope the creator lacks: 403 naming it; * only from a * key', async () => {
      const writer = (await f.issue({ scopes: ['api:read', 'api:write', 'smtp'], account: alice })).key;
      let res = await f.call(writer, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: ['smtp', 'imap'] } });
      expect(res.statusCode).toBe(403);
      expect(res.json().error).toMatchObject({ code: 'forbidden', details: { missingScope: 'imap' } });
      expect(res.json().error.message).toContain('"imap"');
      res = await f.call(writer, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: ['app'] } });
      expect(res.json().error.details.missingScope).toBe('app');
      res = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: ['*'] } });
      expect(res.statusCode).toBe(403);
      expect(res.json().error.details.missingScope).toBe('*');
      res = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: ['internal'] } });
      expect(res.json().error.details.missingScope).toBe('internal');
      // `app` grants what it implies, and itself.
      res = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: ['app', 'smtp', 'api'] } });
      expect(res.statusCode).toBe(201);
      const star = (await f.issue({ scopes: ['*'], account: alice })).key;
      res = await f.call(star, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: ['*'] } });
      expect(res.statusCode).toBe(201);
      // An administrator key grants anything, for any account.
      res = await f.call(f.adminKey, { method: 'POST', url: `/api/accounts/${alice}/smtp-credentials`, payload: { name: 'x', scopes: ['*', 'internal'] } });
      expect(res.statusCode).toBe(201);
    });

    it.each([
      [{ scopes: ['smtp'] }, 'body.name'],
      [{ name: '', scopes: ['smtp'] }, 'body.name'],
      [{ name: '   ', scopes: ['smtp'] }, 'body.name'],
      [{ name: 'x'.repeat(101), scopes: ['smtp'] }, 'body.name'],
      [{ name: 'a\nb', scopes: ['smtp'] }, 'body.name'],
      [{ name: 'x' }, 'body.scopes'],
      [{ name: 'x', scopes: [] }, 'body.scopes'],
      [{ name: 'x', scopes: ['smtp', 'root'] }, 'body.scopes.1'],
      [{ name: 'x', scopes: { smtp: true } }, 'body.scopes'],
      [{ name: 'x', scopes: ['smtp'], expiresAt: 'tomorrow' }, 'body.expiresAt'],
      [{ name: 'x', scopes: ['smtp'], expiresAt: '2001-01-01T00:00:00Z' }, 'body.expiresAt'],
      [{ name: 'x', scopes: ['smtp'], allowedIps: ['10.0.0.0/33'] }, 'body.allowedIps'],
      [{ name: 'x', scopes: ['smtp'], isAdmin: true }, 'body.isAdmin'],
      [{ name: 'x', scopes: ['smtp'], account: 'bob@example.com' }, 'body.account'],
    ])('400 with field details for %j', async (payload, field) => {
      const res = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload });
      expect(res.statusCode).toBe(400);
      const err = res.json().error;
      expect(err.code).toBe('validation');
      expect(err.details.map((d: { field: string }) => d.field)).toContain(field);
    });

    it('refuses bodies that are not JSON objects', async () => {
      const bad = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', headers: { 'content-type': 'application/json' }, payload: '{"name":' });
      expect(bad.statusCode).toBe(400);
      expect(errorCode(bad)).toBe('bad_request');
      const text = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'name=x' });
      expect(text.statusCode).toBe(415);
      expect(errorCode(text)).toBe('unsupported_media_type');
      const none = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials' });
      expect(none.statusCode).toBe(400);
      expect(errorCode(none)).toBe('validation');
    });

    it('refuses a body over the size limit: 413', async () => {
      const res = await f.call(owner, {
        method: 'POST',
        url: '/api/smtp-credentials',
        payload: { name: 'big', scopes: ['smtp'], pad: 'x'.repeat(f.config.http.bodyLimit) },
      });
      expect(res.statusCode).toBe(413);
      expect(res.json()).toEqual({ error: { code: 'payload_too_large', message: expect.any(String) } });
    });
  });

  describe('DELETE /api/smtp-credentials/{keyId}', () => {
    it('revokes: 204 with no body; the key stops working at once; a second delete is 404', async () => {
      const k = await f.issue({ scopes: ['api:read'], account: alice });
      expect((await f.call(k.key, { url: '/api/smtp-credentials' })).statusCode).toBe(200);
      const res = await f.call(owner, { method: 'DELETE', url: `/api/smtp-credentials/${k.record.id}` });
      expect(res.statusCode).toBe(204);
      expect(res.body).toBe('');
      const after = await f.call(k.key, { url: '/api/smtp-credentials' });
      expect(after.statusCode).toBe(401);
      expect((await f.call(owner, { method: 'DELETE', url: `/api/smtp-credentials/${k.record.id}` })).statusCode).toBe(404);
    });

    it('404 for an unknown id', async () => {
      const res = await f.call(owner, { method: 'DELETE', url: '/api/smtp-credentials/00000000-0000-4000-8000-000000000000' });
      expect(res.statusCode).toBe(404);
      expect(res.json().error.code).toBe('not_found');
    });

    it('a key may revoke itself', async () => {
      const k = await f.issue({ scopes: ['api:write'], account: alice });
      expect((await f.call(k.key, { method: 'DELETE', url: `/api/smtp-credentials/${k.record.id}` })).statusCode).toBe(204);
      expect((await f.call(k.key, { method: 'DELETE', url: `/api/smtp-credentials/${k.record.id}` })).statusCode).toBe(401);
    });
  });

  describe('ids never leak across accounts', () => {
    it('another account’s key id is 404 for delete and rotate, same as an unknown id, and stays untouched', async () => {
      const bobKey = await f.issue({ scopes: ['smtp'], account: 'bob@example.com' });
      const unknown = '11111111-1111-4111-8111-111111111111';
      for (const id of [bobKey.record.id, unknown]) {
        const del = await f.call(owner, { method: 'DELETE', url: `/api/smtp-credentials/${id}` });
        const rot = await f.call(owner, { method: 'POST', url: `/api/smtp-credentials/${id}/rotate` });
        expect([del.statusCode, rot.statusCode]).toEqual([404, 404]);
        expect(del.json()).toEqual({ error: { code: 'not_found', message: 'No such key' } });
        expect(rot.json()).toEqual(del.json());
      }
      // Through the admin URL of the wrong account too.
      const viaAdmin = await f.call(f.adminKey, { method: 'DELETE', url: `/api/accounts/${alice}/smtp-credentials/${bobKey.record.id}` });
      expect(viaAdmin.statusCode).toBe(404);
      expect((await f.store.getKey(bobKey.record.id))?.revokedAt).toBeNull();
    });

    it('an unbound key’s id is 404 too', async () => {
      const unbound = await f.issue({ scopes: ['metrics'] });
      expect((await f.call(owner, { method: 'DELETE', url: `/api/smtp-credentials/${unbound.record.id}` })).statusCode).toBe(404);
    });
  });

  describe('POST /api/smtp-credentials/{keyId}/rotate', () => {
    it('200 with a new key, same name and scopes; the old key is refused at once, the new one works', async () => {
      const old = await f.issue({ name: 'Thunderbird', scopes: ['smtp', 'pop3', 'imap', 'api:read'], account: alice, allowedIps: ['127.0.0.0/8'] });
      expect((await f.call(old.key, { url: '/api/smtp-credentials' })).statusCode).toBe(200);
      const res = await f.call(owner, { method: 'POST', url: `/api/smtp-credentials/${old.record.id}/rotate` });
      expect(res.statusCode).toBe(200);
      expect(res.headers['cache-control']).toBe('no-store');
      const body = res.json();
      expectKeyObject(body, ['apiKey']);
      expect(body).toMatchObject({ name: 'Thunderbird', scopes: old.record.scopes, isActive: true, lastUsedAt: null });
      expect(body.id).not.toBe(old.record.id);
      expect(body.apiKey).toMatch(KEY_RE);
      expect((await f.call(old.key, { url: '/api/smtp-credentials' })).statusCode).toBe(401);
      expect((await f.call(body.apiKey, { url: '/api/smtp-credentials' })).statusCode).toBe(200);
      const stored = await f.store.getKey(body.id);
      expect(stored).toMatchObject({ rotatedFrom: old.record.id, account: alice, allowedIps: ['127.0.0.0/8'] });
      // Rotating the old id again: it is no longer an active key.
      expect((await f.call(owner, { method: 'POST', url: `/api/smtp-credentials/${old.record.id}/rotate` })).statusCode).toBe(404);
    });

    it('accepts Content-Type: application/json with an empty body (what many clients send)', async () => {
      const k = await f.issue({ scopes: ['smtp'], account: alice });
      const res = await f.call(owner, { method: 'POST', url: `/api/smtp-credentials/${k.record.id}/rotate`, headers: { 'content-type': 'application/json' } });
      expect(res.statusCode).toBe(200);
    });

    it('concurrent rotations of one key: exactly one wins, exactly one live successor', async () => {
      const k = await f.issue({ name: 'race', scopes: ['smtp'], account: alice });
      const results = await Promise.all([1, 2, 3].map(() => f.call(owner, { method: 'POST', url: `/api/smtp-credentials/${k.record.id}/rotate` })));
      const codes = results.map((r) => r.statusCode).sort();
      expect(codes.filter((c) => c === 200)).toHaveLength(1);
      for (const c of codes.filter((c) => c !== 200)) expect([404, 409]).toContain(c);
      const live = (await f.store.listKeys({ account: alice })).items.filter((x) => x.name === 'race' && x.revokedAt === null);
      expect(live).toHaveLength(1);
    });

    it('does not hand out a stronger key than the caller could issue', async () => {
      const strong = await f.issue({ scopes: ['smtp', 'imap'], account: alice });
      const writer = (await f.issue({ scopes: ['api:write', 'smtp'], account: alice })).key;
      const res = await f.call(writer, { method: 'POST', url: `/api/smtp-credentials/${strong.record.id}/rotate` });
      expect(res.statusCode).toBe(403);
      expect(res.json().error.details.missingScope).toBe('imap');
      expect((await f.store.getKey(strong.record.id))?.revokedAt).toBeNull();
    });
  });

  describe('POST /api/smtp-credentials/mobile', () => {
    it('201, mail-app scopes, platform and deviceId on the record, apiKey once', async () => {
      const res = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: { name: 'iPhone 15', platform: 'ios', deviceId: 'device-identifier' } });
      expect(res.statusCode).toBe(201);
      expect(res.headers['cache-control']).toBe('no-store');
      const body = res.json();
      expectKeyObject(body, ['apiKey']);
      expect(body).toMatchObject({ name: 'iPhone 15', platform: 'ios', deviceId: 'device-identifier', isActive: true, lastUsedAt: null });
      expect([...body.scopes].sort()).toEqual(['imap', 'pop3', 'smtp']);
      expect(body.apiKey).toMatch(KEY_RE);
      // A mail-app key logs in to mail, not to the API.
      expect((await f.call(body.apiKey, { url: '/api/smtp-credentials' })).statusCode).toBe(403);
    });

    it('the same device again replaces its previous key (one live key per device); other devices and accounts are untouched', async () => {
      const mk = (name: string, deviceId: string, key = owner, account?: string) =>
        f.call(key, {
          method: 'POST',
          url: account ? `/api/accounts/${account}/smtp-credentials/mobile` : '/api/smtp-credentials/mobile',
          payload: { name, platform: 'android', deviceId },
        });
      const first = (await mk('Pixel', 'pixel-1')).json();
      const other = (await mk('Tablet', 'tab-1')).json();
      const bobs = (await mk('Bob’s Pixel', 'pixel-1', f.adminKey, 'bob@example.com')).json();
      const second = await mk('Pixel (new)', 'pixel-1');
      expect(second.statusCode).toBe(201);
      const s = second.json();
      expect(s.id).not.toBe(first.id);
      const rec = await f.store.getKey(s.id);
      expect(rec?.rotatedFrom).toBe(first.id);
      expect((await f.store.getKey(first.id))?.revokedAt).not.toBeNull();
      expect((await f.store.getKey(other.id))?.revokedAt).toBeNull();
      expect((await f.store.getKey(bobs.id))?.revokedAt).toBeNull();
      const devices = (await f.call(owner, { url: '/api/smtp-credentials' })).json().keys.filter((k: { deviceId?: string }) => k.deviceId === 'pixel-1');
      expect(devices.map((k: { id: string }) => k.id)).toEqual([s.id]);
    });

    it('concurrent first requests for one device leave exactly one live key', async () => {
      const results = await Promise.all(
        [1, 2, 3, 4].map((i) => f.call(owner, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: { name: `race ${i}`, platform: 'web', deviceId: 'race-device' } })),
      );
      for (const r of results) expect(r.statusCode).toBe(201);
      const live = (await f.store.listKeys({ account: alice })).items.filter((k) => k.deviceId === 'race-device' && k.revokedAt === null);
      expect(live).toHaveLength(1);
    });

    it.each([
      [{ name: 'x', platform: 'symbian', deviceId: 'd' }, 'body.platform'],
      [{ name: 'x', deviceId: 'd' }, 'body.platform'],
      [{ name: 'x', platform: 'ios' }, 'body.deviceId'],
      [{ name: 'x', platform: 'ios', deviceId: '' }, 'body.deviceId'],
      [{ platform: 'ios', deviceId: 'd' }, 'body.name'],
      [{ name: 'x', platform: 'ios', deviceId: 'd', scopes: ['*'] }, 'body.scopes'],
    ])('400 with field details for %j', async (payload, field) => {
      const res = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials/mobile', payload });
      expect(res.statusCode).toBe(400);
      expect(res.json().error.details.map((d: { field: string }) => d.field)).toContain(field);
    });

    it('provisioning a device needs smtp, imap and pop3 held (app does); api:write alone and api:read are refused', async () => {
      const mail = (await f.issue({ scopes: ['api:write', 'smtp', 'imap', 'pop3'], account: alice })).key;
      const res = await f.call(mail, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: { name: 'x', platform: 'ios', deviceId: 'd' } });
      expect(res.statusCode).toBe(201);
      expect(res.json().scopes).toEqual(['smtp', 'imap', 'pop3']);
      const writer = (await f.issue({ scopes: ['api:write'], account: alice })).key;
      const refused = await f.call(writer, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: { name: 'x', platform: 'ios', deviceId: 'w' } });
      expect(refused.statusCode).toBe(403);
      expect(refused.json().error.details).toEqual({ missingScope: 'smtp', missingScopes: ['smtp', 'imap', 'pop3'] });
      expect((await f.store.listKeys({ account: alice })).items.some((k) => k.deviceId === 'w')).toBe(false);
      const reader = (await f.issue({ scopes: ['api:read'], account: alice })).key;
      const denied = await f.call(reader, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: { name: 'x', platform: 'ios', deviceId: 'e' } });
      expect(denied.statusCode).toBe(403);
      expect(denied.json().error.details.missingScope).toBe('api:write');
    });
  });

  describe('administrator form: /api/accounts/{account}/smtp-credentials', () => {
    it('serves the same handlers for the account in the URL', async () => {
      const carol = 'carol@example.com';
      // Creating a key for an address without an account record creates the record.
      const created = await f.call(f.adminKey, { method: 'POST', url: `/api/accounts/${carol}/smtp-credentials`, payload: { name: 'Thunderbird', scopes: ['smtp', 'imap'] } });
      expect(created.statusCode).toBe(201);
      expect(await f.store.getAccount(carol)).not.toBeNull();
      const list = await f.call(f.adminKey, { url: `/api/accounts/${carol}/smtp-credentials` });
      expect(list.statusCode).toBe(200);
      expect(list.json().keys.map((k: { id: string }) => k.id)).toEqual([created.json().id]);
      const rotated = await f.call(f.adminKey, { method: 'POST', url: `/api/accounts/${carol}/smtp-credentials/${created.json().id}/rotate` });
      expect(rotated.statusCode).toBe(200);
      const mobile = await f.call(f.adminKey, { method: 'POST', url: `/api/accounts/${carol}/smtp-credentials/mobile`, payload: { name: 'Phone', platform: 'ios', deviceId: 'p' } });
      expect(mobile.statusCode).toBe(201);
      const del = await f.call(f.adminKey, { method: 'DELETE', url: `/api/accounts/${carol}/smtp-credentials/${rotated.json().id}` });
      expect(del.statusCode).toBe(204);
      const after = (await f.call(f.adminKey, { url: `/api/accounts/${carol}/smtp-credentials` })).json().keys;
      expect(after.map((k: { id: string }) => k.id)).toEqual([mobile.json().id]);
    });

    it('takes the address case-insensitively; 404 for an unknown account; 400 for a non-address', async () => {
      expect((await f.call(f.adminKey, { url: '/api/accounts/ALICE@Example.com/smtp-credentials' })).statusCode).toBe(200);
      const unknown = await f.call(f.adminKey, { url: '/api/accounts/nobody@example.com/smtp-credentials' });
      expect(unknown.statusCode).toBe(404);
      expect(unknown.json().error.code).toBe('not_found');
      const bad = await f.call(f.adminKey, { url: '/api/accounts/not-an-address/smtp-credentials' });
      expect(bad.statusCode).toBe(400);
      expect(bad.json().error.details[0].field).toBe('params.account');
    });

    it('an administrator key on /api/smtp-credentials (no account of its own) is 403', async () => {
      const res = await f.call(f.adminKey, { url: '/api/smtp-credentials' });
      expect(res.statusCode).toBe(403);
      expect(res.json().error.code).toBe('forbidden');
    });
  });
});
