import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeExport } from '../../src/keys/export-codec.js';
import { KEY_RE } from '../../src/keys/format.js';
import { newKey } from '../../src/keys/new-key.js';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

describe.each(storeKinds())('/api/tokens on %s', (kind) => {
  let f: Fixture;
  beforeAll(async () => {
    f = await createFixture(kind);
  });
  afterAll(() => f.close());

  it('POST issues a token: 201, the token once, no-store; it works at once', async () => {
    const res = await f.call(f.adminKey, {
      method: 'POST',
      url: '/api/tokens',
      payload: { description: 'prometheus', scopes: ['metrics'], allowedIps: ['127.0.0.1/32'] },
    });
    expect(res.statusCode).toBe(201);
    expect(res.headers['cache-control']).toBe('no-store');
    const body = res.json();
    expect(body.token).toMatch(KEY_RE);
    expect(body).toMatchObject({ description: 'prometheus', scopes: ['metrics'], account: null, isActive: true, allowedIps: ['127.0.0.1/32'] });
    expect(body).not.toHaveProperty('hash');
    expect((await f.call(body.token, { url: '/metrics' })).statusCode).toBe(200);
  });

  it('POST takes explicit nulls for expiresAt and allowedIps, as a list answer shows them', async () => {
    const res = await f.call(f.adminKey, { method: 'POST', url: '/api/tokens', payload: { description: 'nulls', scopes: ['metrics'], expiresAt: null, allowedIps: null } });
    expect(res.statusCode).toBe(201);
    expect(res.json()).toMatchObject({ expiresAt: null, allowedIps: null });
  });

  it('the name is `name`; `description`, the reference workflow\'s word, is the same field in and out', async () => {
    const byName = await f.call(f.adminKey, { method: 'POST', url: '/api/tokens', payload: { name: 'by name', scopes: ['metrics'] } });
    const byDescription = await f.call(f.adminKey, { method: 'POST', url: '/api/tokens', payload: { description: 'by description', scopes: ['metrics'] } });
    const both = await f.call(f.adminKey, { method: 'POST', url: '/api/tokens', payload: { name: 'both', description: 'both', scopes: ['metrics'] } });
    for (const [res, name] of [[byName, 'by name'], [byDescription, 'by description'], [both, 'both']] as const) {
      expect(res.statusCode).toBe(201);
      expect(res.json()).toMatchObject({ name, description: name });
      expect((await f.store.getKey(res.json().id))?.name).toBe(name);
    }
    const listed = (await f.call(f.adminKey, { url: '/api/tokens' })).json().tokens.find((t: { id: string }) => t.id === byName.json().id);
    expect(listed).toMatchObject({ name: 'by name', description: 'by name' });
  });

  it('POST with an account binds the token and creates the account record', async () => {
    const res = await f.call(f.adminKey, { method: 'POST', url: '/api/tokens', payload: { description: 'user', scopes: ['app'], account: 'New@Example.com' } });
    expect(res.statusCode).toBe(201);
    expect(res.json().account).toBe('new@example.com');
    expect(await f.store.getAccount('new@example.com')).not.toBeNull();
  });

  it.each([
    [{ scopes: ['*'] }, 'body.name'],
    [{ name: ' ', scopes: ['*'] }, 'body.name'],
    [{ description: 'x', scopes: [] }, 'body.scopes'],
    [{ description: 'x', scopes: ['root'] }, 'body.scopes.0'],
    [{ description: 'x', scopes: ['*'], account: 'nope' }, 'body.account'],
    [{ description: 'x', scopes: ['*'], expiresAt: '2001-01-01T00:00:00Z' }, 'body.expiresAt'],
    [{ description: 'x', scopes: ['*'], allowedIps: ['300.1.1.1'] }, 'body.allowedIps'],
    [{ description: 'x', scopes: ['*'], name: 'y' }, 'body.description'],
    [{ description: 'x', scopes: ['*'], label: 'x' }, 'body.label'],
  ])('400 with field details for %j', async (payload, field) => {
    const res = await f.call(f.adminKey, { method: 'POST', url: '/api/tokens', payload });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.details.map((d: { field: string }) => d.field)).toContain(field);
  });

  it('GET lists tokens without secrets or hashes', async () => {
    const res = await f.call(f.adminKey, { url: '/api/tokens' });
    expect(res.statusCode).toBe(200);
    const { tokens } = res.json();
    expect(tokens.length).toBeGreaterThanOrEqual(3);
    expect(res.body).not.toMatch(/kg_[0-9A-Za-z]{49}|[0-9a-f]{64}/);
  });

  it('DELETE revokes: 204; unknown id 404', async () => {
    const t = await f.issue({ scopes: ['metrics'] });
    expect((await f.call(t.key, { url: '/metrics' })).statusCode).toBe(200);
    expect((await f.call(f.adminKey, { method: 'DELETE', url: `/api/tokens/${t.record.id}` })).statusCode).toBe(204);
    expect((await f.call(t.key, { url: '/metrics' })).statusCode).toBe(401);
    const unknown = await f.call(f.adminKey, { method: 'DELETE', url: '/api/tokens/00000000-0000-4000-8000-000000000000' });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().error.code).toBe('not_found');
  });

  it('export gives the blob (hash and metadata, not the token); import: 201 imported, then 200 already present', async () => {
    const t = await f.issue({ scopes: ['smtp'], account: 'x@example.com' });
    const exp = await f.call(f.adminKey, { url: `/api/tokens/${t.record.id}/export` });
    expect(exp.statusCode).toBe(200);
    expect(exp.json().id).toBe(t.record.id);
    expect(exp.body).not.toContain(t.key);
    const again = await f.call(f.adminKey, { method: 'POST', url: '/api/tokens/import', payload: { blob: exp.json().blob } });
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ imported: false, token: { id: t.record.id } });

    const fresh = newKey({ name: 'from elsewhere', scopes: ['imap'], account: 'y@example.com' });
    const imp = await f.call(f.adminKey, { method: 'POST', url: '/api/tokens/import', payload: { blob: encodeExport(fresh.record) } });
    expect(imp.statusCode).toBe(201);
    expect(imp.json()).toMatchObject({ imported: true, token: { id: fresh.record.id, account: 'y@example.com', scopes: ['imap'] } });
    expect((await f.store.findByHash(fresh.record.hash))?.id).toBe(fresh.record.id);

    expect((await f.call(f.adminKey, { url: '/api/tokens/nope/export' })).statusCode).toBe(404);
    const bad = await f.call(f.adminKey, { method: 'POST', url: '/api/tokens/import', payload: { blob: 'garbage' } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.details[0].field).toBe('body.blob');
  });

  it('is for administrator keys only', async () => {
    const bound = (await f.issue({ scopes: ['*'], account: 'x@example.com' })).key;
    const metricsOnly = (await f.issue({ scopes: ['metrics'] })).key;
    for (const k of [bound, metricsOnly]) {
      expect((await f.call(k, { url: '/api/tokens' })).statusCode).toBe(403);
      expect((await f.call(k, { method: 'POST', url: '/api/tokens', payload: { description: 'x', scopes: ['*'] } })).statusCode).toBe(403);
    }
  });
});
