import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newKey } from '../../src/keys/new-key.js';
import type { KeyRecord } from '../../src/keys/record.js';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

interface Page<T> {
  items: T[];
  nextCursor: string | null;
  pages: number;
}

/** Follows nextCursor from the first page to the last, as a client would. */
async function pageThrough<T>(f: Fixture, url: string, field: string, between?: () => Promise<void>): Promise<Page<T>> {
  const items: T[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const sep = url.includes('?') ? '&' : '?';
    const res = await f.call(f.adminKey, { url: cursor === null ? url : `${url}${sep}cursor=${cursor}` });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json() as Record<string, unknown>;
    expect(body).toHaveProperty('nextCursor');
    items.push(...(body[field] as T[]));
    cursor = body.nextCursor as string | null;
    pages++;
    await between?.();
  } while (cursor !== null && pages < 1000);
  return { items, nextCursor: cursor, pages };
}

describe.each(storeKinds())('paged lists on %s', (kind) => {
  let f: Fixture;
  const made: KeyRecord[] = [];
  const now = Date.now();
  beforeAll(async () => {
    f = await createFixture(kind);
    for (let i = 0; i < 45; i++) {
      const k = newKey(
        { name: i % 3 ? `Laptop ${i}` : `Phone ${i}`, scopes: ['smtp'], account: `user${i % 4}@example.com`, expiresAt: i % 10 === 9 ? new Date(now - 1000).toISOString() : null },
        new Date(now - 100_000 + i * 1000),
      ).record;
      await f.store.importKey(k);
      made.push(k);
    }
    for (const k of made.filter((_, i) => i % 8 === 0)) await f.store.revokeKey(k.id, new Date().toISOString());
  });
  afterAll(() => f.close());

  it('GET /api/tokens answers 100 at most by default and follows nextCursor to the end, newest first', async () => {
    const first = await f.call(f.adminKey, { url: '/api/tokens' });
    expect(first.statusCode).toBe(200);
    expect(first.json().tokens.length).toBe(46); // with the fixture's admin key
    expect(first.json().nextCursor).toBeNull();
    const paged = await pageThrough<{ id: string }>(f, '/api/tokens?limit=10', 'tokens');
    expect(paged.pages).toBe(5);
    expect(paged.items.map((t) => t.id)).toEqual(first.json().tokens.map((t: { id: string }) => t.id));
    expect(paged.items.slice(1).map((t) => t.id)).toEqual([...made].reverse().map((k) => k.id));
  });

  it('GET /api/tokens filters by account, state, name prefix and address prefix', async () => {
    const ids = async (query: string) => (await pageThrough<{ id: string }>(f, `/api/tokens?limit=3&${query}`, 'tokens')).items.map((t) => t.id);
    const newest = (pick: (k: KeyRecord, i: number) => boolean) => made.filter(pick).reverse().map((k) => k.id);
    expect(await ids('account=User1@example.com')).toEqual(newest((k) => k.account === 'user1@example.com'));
    expect(await ids('state=revoked')).toEqual(newest((_, i) => i % 8 === 0));
    expect(await ids('state=expired')).toEqual(newest((_, i) => i % 10 === 9 && i % 8 !== 0));
    expect(await ids('state=active&namePrefix=Phone')).toEqual(newest((k, i) => k.name.startsWith('Phone') && i % 8 !== 0 && i % 10 !== 9));
    expect(await ids('addressPrefix=user2&state=all')).toEqual(newest((k) => k.account === 'user2@example.com'));
  });

  it('refuses a bad limit, state or cursor with 400 naming the parameter', async () => {
    for (const [query, field] of [
      ['limit=0', 'querystring.limit'],
      ['limit=1001', 'querystring.limit'],
      ['limit=ten', 'querystring.limit'],
      ['state=gone', 'querystring.state'],
      ['cursor=not%20base64', 'querystring.cursor'],
      [`cursor=${Buffer.from('no such position').toString('base64url')}`, 'querystring.cursor'],
      [`cursor=${'A'.repeat(2000)}`, 'querystring.cursor'],
    ] as const) {
      for (const url of [`/api/tokens?${query}`, `/api/accounts?${query}`, `/api/accounts/user1@example.com/smtp-credentials?${query}`]) {
        if (url.startsWith('/api/accounts?') && query.startsWith('state')) continue;
        const res = await f.call(f.adminKey, { url });
        expect(res.statusCode, url).toBe(400);
        expect(res.json().error.details.map((d: { field: string }) => d.field), url).toContain(field);
      }
    }
  });

  it('GET /api/accounts pages by address and filters by address prefix', async () => {
    const all = await pageThrough<{ address: string }>(f, '/api/accounts?limit=2', 'accounts');
    expect(all.items.map((a) => a.address)).toEqual(['user0@example.com', 'user1@example.com', 'user2@example.com', 'user3@example.com']);
    expect(all.pages).toBe(2);
    const some = await pageThrough<{ address: string }>(f, '/api/accounts?limit=1&addressPrefix=USER3', 'accounts');
    expect(some.items.map((a) => a.address)).toEqual(['user3@example.com']);
  });

  it("an account's keys for administrators: active by default, any state on request, a page at a time; the key's own list keeps the reference shape", async () => {
    const url = '/api/accounts/user1@example.com/smtp-credentials';
    const active = await pageThrough<{ id: string; isActive: boolean }>(f, `${url}?limit=2`, 'keys');
    const mine = made.filter((k) => k.account === 'user1@example.com').reverse();
    expect(active.items.map((k) => k.id)).toEqual(mine.filter((k) => made.indexOf(k) % 8 !== 0 && made.indexOf(k) % 10 !== 9).map((k) => k.id));
    expect(active.items.every((k) => k.isActive)).toBe(true);
    const all = await pageThrough<{ id: string }>(f, `${url}?limit=4&state=all`, 'keys');
    expect(all.items.map((k) => k.id)).toEqual(mine.map((k) => k.id));
    const first = (await f.call(f.adminKey, { url })).json();
    expect(Object.keys(first).sort()).toEqual(['connectionInfo', 'keys', 'nextCursor']);

    const own = await f.issue({ scopes: ['app'], account: 'user1@example.com' });
    const res = await f.call(own.key, { url: '/api/smtp-credentials' });
    expect(res.statusCode).toBe(200);
    expect(Object.keys(res.json()).sort()).toEqual(['connectionInfo', 'keys']);
    expect(res.json().keys.map((k: { id: string }) => k.id)).toEqual([own.record.id, ...active.items.map((k) => k.id)]);
  });

  it('paging /api/tokens while tokens are issued and revoked through the API lists every earlier token exactly once', async () => {
    const before = (await pageThrough<{ id: string }>(f, '/api/tokens?limit=1000', 'tokens')).items.map((t) => t.id);
    let i = 0;
    const seen = await pageThrough<{ id: string }>(f, '/api/tokens?limit=4', 'tokens', async () => {
      // Between pages: a new token, and an earlier one revoked.
      const created = await f.call(f.adminKey, { method: 'POST', url: '/api/tokens', payload: { description: `during ${i}`, scopes: ['smtp'], account: 'during@example.com' } });
      expect(created.statusCode).toBe(201);
      const victim = before[(i * 7) % before.length]!;
      if (victim !== made[0]?.id) await f.call(f.adminKey, { method: 'DELETE', url: `/api/tokens/${victim}` });
      i++;
    });
    const ids = seen.items.map((t) => t.id);
    expect(i).toBeGreaterThan(5);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of before) expect(ids.filter((x) => x === id)).toHaveLength(1);
  });

  it('documents limit, cursor and the filters in OpenAPI, and nextCursor in every paged answer', async () => {
    const doc = (await f.call(null, { url: '/openapi.json' })).json();
    const params = (path: string) => (doc.paths[path].get.parameters as { name: string; in: string }[]).filter((p) => p.in === 'query').map((p) => p.name).sort();
    expect(params('/api/tokens')).toEqual(['account', 'addressPrefix', 'cursor', 'limit', 'namePrefix', 'state']);
    expect(params('/api/accounts')).toEqual(['addressPrefix', 'cursor', 'limit']);
    expect(params('/api/accounts/{account}/smtp-credentials')).toEqual(['cursor', 'limit', 'namePrefix', 'state']);
    expect(doc.paths['/api/smtp-credentials'].get.parameters ?? []).toEqual([]);
    for (const path of ['/api/tokens', '/api/accounts', '/api/accounts/{account}/smtp-credentials']) {
      const schema = doc.paths[path].get.responses['200'].content['application/json'].schema;
      expect(schema.required, path).toContain('nextCursor');
      const limit = doc.paths[path].get.parameters.find((p: { name: string }) => p.name === 'limit');
      expect(limit.schema).toMatchObject({ minimum: 1, maximum: 1000, default: 100 });
    }
  });
});
