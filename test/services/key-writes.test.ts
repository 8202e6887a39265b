import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decideGrant } from '../../src/keys/policy.js';
import { ROOT } from '../helpers/cli.js';

const STORE_KEY_WRITES = /\.(createKey|importKey|rotateKey|replaceDeviceKey|revokeKey)\(/;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

describe('one way for a new key into the store', () => {
  it('only src/services/key-writes.ts calls the store key writes (so every route and command passes the grant check)', () => {
    const callers = sources(join(ROOT, 'src'))
      .filter((f) => STORE_KEY_WRITES.test(readFileSync(f, 'utf8')))
      .map((f) => relative(ROOT, f))
      .filter((f) => !f.startsWith('src/store/'));
    expect(callers).toEqual(['src/services/key-writes.ts']);
  });

  it('the operator (CLI, prepared tokens) grants anything; a key only what it holds, for its own account', () => {
    expect(decideGrant('operator', { account: null, scopes: ['*'] })).toEqual({ allowed: true });
    expect(decideGrant({ account: 'a@x.test', scopes: ['app'] }, { account: 'a@x.test', scopes: ['smtp', 'imap', 'pop3'] })).toEqual({ allowed: true });
    expect(decideGrant({ account: 'a@x.test', scopes: ['app'] }, { account: 'b@x.test', scopes: ['smtp'] })).toEqual({ allowed: false, reason: 'account_mismatch' });
    expect(decideGrant({ account: 'a@x.test', scopes: ['app'] }, { account: null, scopes: ['smtp'] })).toEqual({ allowed: false, reason: 'account_mismatch' });
    expect(decideGrant({ account: 'a@x.test', scopes: ['api:write'] }, { account: 'a@x.test', scopes: ['app'] })).toEqual({
      allowed: false,
      reason: 'missing_scope',
      missingScopes: ['app', 'smtp', 'imap', 'pop3', 'api:read'],
    });
    expect(decideGrant({ account: null, scopes: ['api:write'] }, { account: null, scopes: ['api:write'] })).toEqual({ allowed: false, reason: 'missing_scope', missingScopes: ['api:read'] });
    expect(decideGrant({ account: null, scopes: ['api:read', 'api:write'] }, { account: 'b@x.test', scopes: ['*'] })).toMatchObject({ allowed: false, missingScopes: expect.arrayContaining(['*']) });
    expect(decideGrant({ account: null, scopes: ['*'] }, { account: 'b@x.test', scopes: ['*', 'internal'] })).toEqual({ allowed: true });
  });
});
