import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

const ACCOUNT_FIELDS = ['address', 'aliases', 'createdAt', 'disabled', 'displayName'];

describe.each(storeKinds())('/api/accounts on %s', (kind) => {
  let f: Fixture;
  beforeAll(async () => {
    f = await createFixture(kind);
  });
  afterAll(() => f.close());

  it('POST creates: 201 with the account; addresses and aliases are lowercased', async () => {
    const res = await f.call(f.adminKey, {
      method: 'POST',
      url: '/api/accounts',
      payload: { address: 'Ann@Example.com', displayName: 'Ann', aliases: ['ANNIE@example.com', 'a@example.org'] },
    });
    expect(res.statusCode).toBe(201);
    expect(res.json()).toEqual({
      address: 'ann@example.com',
      displayName: 'Ann',
      aliases: expect.arrayContaining(['annie@example.com', 'a@example.org']),
      disabled: false,
      createdAt: expect.any(String),
    });
  });

  it('409 when the address or an alias is taken', async () => {
    const again = await f.call(f.adminKey, { method: 'POST', url: '/api/accounts', payload: { address: 'ann@example.com' } });
    expect(again.statusCode).toBe(409);
    expect(again.json().error.code).toBe('conflict');
    const aliasTaken = await f.call(f.adminKey, { method: 'POST', url: '/api/accounts', payload: { address: 'annie@example.com' } });
    expect(aliasTaken.statusCode).toBe(409);
  });

  it.each([
    [{}, 'body.address'],
    [{ address: 'not an address' }, 'body.address'],
    [{ address: 'x@example.com', aliases: ['nope'] }, 'body.aliases.0'],
    [{ address: 'x@example.com', upstream: { host: 'imap.example.com' } }, 'body.upstream'],
    [{ address: 'x@example.com', disabled: 'maybe' }, 'body.disabled'],
  ])('400 with field details for %j', async (payload, field) => {
    const res = await f.call(f.adminKey, { method: 'POST', url: '/api/accounts', payload });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.details.map((d: { field: string }) => d.field)).toContain(field);
  });

  it('GET lists accounts and GET /{account} shows one, never the upstream field', async () => {
    await f.store.updateAccount('ann@example.com', { upstream: { host: 'imap.internal', password: 'upstream-secret' } });
    const list = await f.call(f.adminKey, { url: '/api/accounts' });
    expect(list.statusCode).toBe(200);
    const ann = list.json().accounts.find((a: { address: string }) => a.address === 'ann@example.com');
    expect(Object.keys(ann).sort()).toEqual(ACCOUNT_FIELDS);
    const one = await f.call(f.adminKey, { url: '/api/accounts/ANN@example.com' });
    expect(one.statusCode).toBe(200);
    expect(Object.keys(one.json()).sort()).toEqual(ACCOUNT_FIELDS);
    expect(list.body + one.body).not.toContain('upstream');
    expect((await f.call(f.adminKey, { url: '/api/accounts/nobody@example.com' })).statusCode).toBe(404);
  });

  it('PATCH changes only the given fields; 404 unknown; 400 for an empty or unknown change', async () => {
    const res = await f.call(f.adminKey, { method: 'PATCH', url: '/api/accounts/ann@example.com', payload: { displayName: 'Ann B.', aliases: ['ab@example.com'] } });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ address: 'ann@example.com', displayName: 'Ann B.', aliases: ['ab@example.com'], disabled: false });
    // The old aliases are free again.
    expect((await f.call(f.adminKey, { method: 'POST', url: '/api/accounts', payload: { address: 'annie@example.com' } })).statusCode).toBe(201);
    expect((await f.call(f.adminKey, { method: 'PATCH', url: '/api/accounts/nobody@example.com', payload: { disabled: true } })).statusCode).toBe(404);
    const empty = await f.call(f.adminKey, { method: 'PATCH', url: '/api/accounts/ann@example.com', payload: {} });
    expect(empty.statusCode).toBe(400);
    const addr = await f.call(f.adminKey, { method: 'PATCH', url: '/api/accounts/ann@example.com', payload: { address: 'new@example.com' } });
    expect(addr.statusCode).toBe(400);
    expect(addr.json().error.details).toContainEqual({ field: 'body.address', message: 'unknown field' });
    const taken = await f.call(f.adminKey, { method: 'PATCH', url: '/api/accounts/ann@example.com', payload: { aliases: ['annie@example.com'] } });
    expect(taken.statusCode).toBe(409);
    // Still readable after the refused change (all-or-nothing).
    expect((await f.call(f.adminKey, { url: '/api/accounts/ann@example.com' })).json().aliases).toEqual(['ab@example.com']);
  });

  it('PATCH disabled:true refuses the account’s keys at once, on every route', async () => {
    const k = await f.issue({ scopes: ['*'], account: 'ann@example.com' });
    expect((await f.call(k.key, { url: '/api/smtp-credentials' })).statusCode).toBe(200);
    await f.call(f.adminKey, { method: 'PATCH', url: '/api/accounts/ann@example.com', payload: { disabled: true } });
    for (const url of ['/api/smtp-credentials', `/api/accounts/ann@example.com/smtp-credentials`]) {
      expect((await f.call(k.key, { url })).statusCode).toBe(401);
    }
    // The administrator still sees the account and its keys.
    expect((await f.call(f.adminKey, { url: '/api/accounts/ann@example.com/smtp-credentials' })).statusCode).toBe(200);
  });

  it('DELETE removes the account and revokes its keys: 204, then 404', async () => {
    const k = await f.issue({ scopes: ['app'], account: 'gone@example.com' });
    const del = await f.call(f.adminKey, { method: 'DELETE', url: '/api/accounts/gone@example.com' });
    expect(del.statusCode).toBe(204);
    expect(del.body).toBe('');
    expect((await f.call(k.key, { url: '/api/smtp-credentials' })).statusCode).toBe(401);
    expect((await f.store.getKey(k.record.id))?.revokedAt).not.toBeNull();
    expect((await f.call(f.adminKey, { method: 'DELETE', url: '/api/accounts/gone@example.com' })).statusCode).toBe(404);
    expect((await f.call(f.adminKey, { url: '/api/accounts/gone@example.com' })).statusCode).toBe(404);
  });

  it('is for administrator keys only: a bound key, even with *, gets 403', async () => {
    const k = await f.issue({ scopes: ['*'], account: 'annie@example.com' });
    for (const [method, url] of [
      ['GET', '/api/accounts'],
      ['POST', '/api/accounts'],
      ['GET', '/api/accounts/annie@example.com'],
      ['PATCH', '/api/accounts/annie@example.com'],
      ['DELETE', '/api/accounts/annie@example.com'],
    ] as const) {
      const payload = method === 'POST' ? { address: 'z@example.com' } : method === 'PATCH' ? { disabled: true } : undefined;
      expect((await f.call(k.key, { method, url, ...(payload && { payload }) })).statusCode).toBe(403);
    }
    // A read-only unbound key may read but not write.
    const reader = (await f.issue({ scopes: ['api:read'] })).key;
    expect((await f.call(reader, { url: '/api/accounts' })).statusCode).toBe(200);
    const w = await f.call(reader, { method: 'POST', url: '/api/accounts', payload: { address: 'z@example.com' } });
    expect(w.statusCode).toBe(403);
    expect(w.json().error.details).toEqual({ missingScope: 'api:write' });
  });
});
