import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeExport } from '../../src/keys/export-codec.js';
import { newKey } from '../../src/keys/new-key.js';
import { effectiveScopes, normalizeScopes, SCOPES, type Scope } from '../../src/keys/scopes.js';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

/*
 * "A key never grants more than it holds", walked over every route that makes
 * a key × every caller scope set, bound and unbound × every requested scope.
 * Each answer is checked two ways:
 *  - the invariant: a 2xx result holds no scope its caller lacks (with what
 *    each implies) and, for a bound caller, is bound to the caller's account;
 *  - the expectation, from the rule as the README states it, so a route that
 *    refuses everything fails too. A refusal writes nothing: no key, no account.
 */

const ALICE = 'alice@example.com';
const CALLERS: Scope[][] = [...SCOPES.map((s) => [s]), normalizeScopes(['api']), normalizeScopes(['api', 'smtp']), ['api:write', 'smtp', 'imap', 'pop3'], ['app', 'metrics']];
const REQUESTS: Scope[][] = [...SCOPES.map((s) => [s]), normalizeScopes(['api'])];
const MOBILE: Scope[] = ['smtp', 'imap', 'pop3'];

type Target = 'own' | 'other' | 'none';
type Route = 'tokens' | 'import' | 'create' | 'create-url' | 'mobile' | 'mobile-url' | 'rotate' | 'rotate-url';
const ROUTES: Route[] = ['tokens', 'import', 'create', 'create-url', 'mobile', 'mobile-url', 'rotate', 'rotate-url'];

/** Every scope a set grants, `app` meaning nothing on an unbound key (as the scope table says). */
function power(scopes: readonly Scope[], bound: boolean): Set<Scope> {
  return effectiveScopes(bound ? scopes : scopes.filter((s) => s !== 'app'));
}

/** The rule as the README states it: may this caller make this key? */
function expected(route: Route, caller: Scope[], bound: boolean, requested: readonly Scope[], target: Target): boolean {
  const has = power(caller, bound);
  const admin = !bound && has.has('api:read') && has.has('api:write');
  if (route === 'tokens' || route === 'import') return admin && [...effectiveScopes(requested)].every((s) => has.has(s));
  if ((route === 'create' || route === 'mobile' || route === 'rotate') && !bound) return false; // own-account routes: no account
  const mayWrite = bound ? target === 'own' && has.has('api:write') : admin;
  return mayWrite && [...effectiveScopes(requested)].every((s) => has.has(s));
}

describe.each(storeKinds())('grant rule on %s: every key-making route × caller × requested scopes', (kind) => {
  let f: Fixture;
  let n = 0;
  beforeAll(async () => {
    // Every caller × route × scopes case issues keys for alice: more than the default key limit.
    f = await createFixture(kind, { flags: { 'limits.keysPerAccount': 1000 } });
  });
  afterAll(() => f.close());

  const fresh = () => `other-${++n}@example.com`;

  it.each(CALLERS.flatMap((scopes) => [true, false].map((bound) => ({ scopes, bound }))))('caller $scopes, bound=$bound', async ({ scopes, bound }) => {
    const caller = (await f.issue({ scopes, account: bound ? ALICE : null })).key;
    const held = power(scopes, bound);
    const problems: string[] = [];
    let made = 0;

    const check = async (route: Route, requested: readonly Scope[], target: Target, send: (account: string | null) => Promise<{ statusCode: number; body: string }>) => {
      const account = target === 'own' ? ALICE : target === 'other' ? fresh() : null;
      const res = await send(account);
      const label = `${route} ${requested.join(',')} for ${target}`;
      const ok = res.statusCode >= 200 && res.statusCode < 300;
      if (ok !== expected(route, scopes, bound, requested, target)) problems.push(`${label}: ${res.statusCode} ${res.body.slice(0, 120)}`);
      if (!ok) {
        if (res.statusCode !== 403) problems.push(`${label}: refused with ${res.statusCode}, not 403`);
        if (target === 'other' && !route.startsWith('rotate') && (await f.store.getAccount(account!)) !== null) problems.push(`${label}: refused, but the account was created`);
        return;
      }
      made++;
      const body = JSON.parse(res.body) as { id?: string; token?: { id: string } };
      const record = await f.store.getKey(body.token?.id ?? body.id!);
      if (!record) return void problems.push(`${label}: ${res.statusCode} but no key stored`);
      const beyond = [...effectiveScopes(record.scopes)].filter((s) => !held.has(s));
      if (beyond.length > 0) problems.push(`${label}: the new key holds ${beyond.join(',')} that its caller lacks`);
      if (bound && record.account !== ALICE) problems.push(`${label}: a key bound to ${ALICE} made a key for ${record.account ?? 'no account'}`);
    };
    const post = (url: string, payload: unknown) => f.call(caller, { method: 'POST', url, payload: payload as Record<string, unknown> });
    const targetKey = async (requested: readonly Scope[], account: string) => (await f.issue({ scopes: [...requested], account })).record.id;

    for (const route of ROUTES) {
      const targets: Target[] = route === 'tokens' || route === 'import' ? ['own', 'other', 'none'] : route.endsWith('-url') ? ['own', 'other'] : ['own'];
      for (const target of targets) {
        const url = (account: string | null) => (route.endsWith('-url') ? `/api/accounts/${account}/smtp-credentials` : '/api/smtp-credentials');
        if (route === 'mobile' || route === 'mobile-url') {
          await check(route, MOBILE, target, (a) => post(`${url(a)}/mobile`, { name: 'm', platform: 'ios', deviceId: `d${++n}` }));
          continue;
        }
        for (const requested of REQUESTS) {
          switch (route) {
            case 'tokens':
              await check(route, requested, target, (a) => post('/api/tokens', { description: 't', scopes: requested, ...(a && { account: a }) }));
              break;
            case 'import':
              await check(route, requested, target, (a) => post('/api/tokens/import', { blob: encodeExport(newKey({ name: 'i', scopes: [...requested], account: a }).record) }));
              break;
            case 'create':
            case 'create-url':
              await check(route, requested, target, (a) => post(url(a), { name: 'c', scopes: requested }));
              break;
            case 'rotate':
            case 'rotate-url':
              // The key to rotate belongs to the target account (whose record it creates).
              await check(route, requested, target, async (a) => {
                const id = await targetKey(requested, a ?? ALICE);
                return post(`${url(a)}/${id}/rotate`, undefined);
              });
              break;
          }
        }
      }
    }
    expect(problems).toEqual([]);
    // The rule must let a caller make what it holds: `*` and the administrators make keys on every route open to them.
    if (bound ? held.has('api:write') : held.has('api:read') && held.has('api:write')) expect(made).toBeGreaterThan(0);
    else expect(made).toBe(0);
  });

  it('a bound caller never reaches another account, and an unbound api:write key is no administrator', async () => {
    const writer = (await f.issue({ scopes: ['api:write'] })).key;
    const star = await f.call(writer, { method: 'POST', url: '/api/tokens', payload: { description: 'x', scopes: ['*'] } });
    expect(star.statusCode).toBe(403);
    const target = fresh();
    const mobile = await f.call(writer, { method: 'POST', url: `/api/accounts/${target}/smtp-credentials/mobile`, payload: { name: 'p', platform: 'ios', deviceId: 'x' } });
    expect(mobile.statusCode).toBe(403);
    expect(await f.store.getAccount(target)).toBeNull();
  });

  it("routing an account's mail (PUT …/upstream) takes the mail scopes too: an api administrator could send the master password to itself", async () => {
    await f.call(f.adminKey, { method: 'POST', url: '/api/accounts', payload: { address: 'routed@example.com' } });
    const route = { imap: { host: 'mail.attacker.test', port: 143, tls: 'none', login: 'master' } };
    const api = (await f.issue({ scopes: ['api'] })).key;
    const refused = await f.call(api, { method: 'PUT', url: '/api/accounts/routed@example.com/upstream', payload: route });
    expect(refused.statusCode).toBe(403);
    expect(refused.json().error.details).toEqual({ missingScope: 'smtp' });
    expect((await f.call(api, { method: 'DELETE', url: '/api/accounts/routed@example.com/upstream' })).statusCode).toBe(403);
    expect((await f.call(api, { url: '/api/accounts/routed@example.com/upstream' })).json()).toEqual({ account: 'routed@example.com', route: null });
    const services = (await f.issue({ scopes: ['api', 'internal'] })).key;
    expect((await f.call(services, { method: 'PUT', url: '/api/accounts/routed@example.com/upstream', payload: route })).statusCode).toBe(200);
    expect((await f.call(f.adminKey, { method: 'DELETE', url: '/api/accounts/routed@example.com/upstream' })).statusCode).toBe(204);
  });
});
