import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeExport } from '../../src/keys/export-codec.js';
import { newKey } from '../../src/keys/new-key.js';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

/** The answer every key-creating route gives past the limit: 409, naming the limit and the setting. */
function expectLimit(res: LightMyRequestResponse, account: string): void {
  expect(res.statusCode, res.body).toBe(409);
  const { error } = res.json() as { error: { code: string; message: string; details: unknown } };
  expect(error.code).toBe('key_limit');
  expect(error.message).toContain(`account ${account} already has 3 active keys`);
  expect(error.message).toContain('limits.keysPerAccount');
  expect(error.details).toEqual({ limit: 3, account });
  expect(res.body).not.toMatch(/kg_[0-9A-Za-z]{49}/);
}

describe.each(storeKinds())('the per-account key limit on every key-creating route, on %s', (kind) => {
  let f: Fixture;
  beforeAll(async () => {
    f = await createFixture(kind, { flags: { 'limits.keysPerAccount': 3 } });
  });
  afterAll(() => f.close());

  /** Fills the account to the limit; returns its keys (the first has `app`, for the account's own routes). */
  async function fullAccount(account: string) {
    const keys = [];
    for (const [i, scopes] of [['app'], ['smtp'], ['imap']].entries()) keys.push(await f.issue({ name: `k${i}`, scopes, account }));
    return keys;
  }
  const activeCount = async (account: string) => (await f.store.activeKeys(account)).length;

  it('POST /api/tokens', async () => {
    await fullAccount('tokens@example.com');
    expectLimit(await f.call(f.adminKey, { method: 'POST', url: '/api/tokens', payload: { description: 'one more', scopes: ['smtp'], account: 'tokens@example.com' } }), 'tokens@example.com');
    expect(await activeCount('tokens@example.com')).toBe(3);
    // Unbound tokens have no account, so no limit.
    expect((await f.call(f.adminKey, { method: 'POST', url: '/api/tokens', payload: { description: 'unbound', scopes: ['metrics'] } })).statusCode).toBe(201);
  });

  it('POST /api/smtp-credentials (the account’s own key) and /api/accounts/{account}/smtp-credentials (administrators)', async () => {
    const [own] = await fullAccount('own@example.com');
    const payload = { name: 'Thunderbird', scopes: ['smtp', 'imap'] };
    expectLimit(await f.call(own!.key, { method: 'POST', url: '/api/smtp-credentials', payload }), 'own@example.com');
    expectLimit(await f.call(f.adminKey, { method: 'POST', url: '/api/accounts/own@example.com/smtp-credentials', payload }), 'own@example.com');
    expect(await activeCount('own@example.com')).toBe(3);
    // Revoking one makes room again.
    const [, second] = (await f.store.activeKeys('own@example.com')).reverse();
    expect((await f.call(own!.key, { method: 'DELETE', url: `/api/smtp-credentials/${second!.id}` })).statusCode).toBe(204);
    expect((await f.call(own!.key, { method: 'POST', url: '/api/smtp-credentials', payload })).statusCode).toBe(201);
  });

  it('POST …/mobile: a new device is refused at the limit; the same device again replaces its key', async () => {
    const [own] = await fullAccount('mobile@example.com');
    await f.store.revokeKey((await f.store.activeKeys('mobile@example.com')).at(0)!.id, new Date().toISOString());
    const phone = { name: 'iPhone', platform: 'ios', deviceId: 'phone-1' };
    expect((await f.call(own!.key, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: phone })).statusCode).toBe(201);
    expectLimit(await f.call(own!.key, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: { ...phone, deviceId: 'tablet-1' } }), 'mobile@example.com');
    expectLimit(await f.call(f.adminKey, { method: 'POST', url: '/api/accounts/mobile@example.com/smtp-credentials/mobile', payload: { ...phone, deviceId: 'tablet-2' } }), 'mobile@example.com');
    const again = await f.call(own!.key, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: phone });
    expect(again.statusCode).toBe(201);
    expect(await activeCount('mobile@example.com')).toBe(3);
  });

  it('POST …/{keyId}/rotate never adds a key, so it works at the limit', async () => {
    const [own, smtp] = await fullAccount('rotate@example.com');
    const res = await f.call(own!.key, { method: 'POST', url: `/api/smtp-credentials/${smtp!.record.id}/rotate` });
    expect(res.statusCode).toBe(200);
    const admin = await f.call(f.adminKey, { method: 'POST', url: `/api/accounts/rotate@example.com/smtp-credentials/${res.json().id}/rotate` });
    expect(admin.statusCode).toBe(200);
    expect(await activeCount('rotate@example.com')).toBe(3);
  });

  it('POST /api/tokens/import: an active key for a full account is refused; a revoked one is kept', async () => {
    await fullAccount('import@example.com');
    const live = newKey({ name: 'from elsewhere', scopes: ['imap'], account: 'import@example.com' }).record;
    expectLimit(await f.call(f.adminKey, { method: 'POST', url: '/api/tokens/import', payload: { blob: encodeExport(live) } }), 'import@example.com');
    expect(await f.store.getKey(live.id)).toBeNull();
    const revoked = { ...newKey({ name: 'old', scopes: ['imap'], account: 'import@example.com' }).record, revokedAt: new Date().toISOString() };
    expect((await f.call(f.adminKey, { method: 'POST', url: '/api/tokens/import', payload: { blob: encodeExport(revoked) } })).statusCode).toBe(201);
  });

  it('concurrent creations through the API stop at the limit', async () => {
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        f.call(f.adminKey, { method: 'POST', url: '/api/accounts/race@example.com/smtp-credentials', payload: { name: `c${i}`, scopes: ['smtp'] } }),
      ),
    );
    expect(results.filter((r) => r.statusCode === 201)).toHaveLength(3);
    for (const r of results.filter((x) => x.statusCode !== 201)) expectLimit(r, 'race@example.com');
    expect(await activeCount('race@example.com')).toBe(3);
  });
});
