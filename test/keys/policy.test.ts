import { describe, expect, it } from 'vitest';
import { newKey } from '../../src/keys/new-key.js';
import { decide, isAdminKey, type Action } from '../../src/keys/policy.js';
import type { AccountRecord, KeyRecord } from '../../src/keys/record.js';
import { normalizeScopes, SCOPES, UnknownScopeError, type Scope } from '../../src/keys/scopes.js';

const OWN = 'a@example.com';
const OTHER = 'b@example.com';
const NOW = new Date('2026-06-01T00:00:00Z');

const ACTIONS: [string, Action][] = [
  ['login smtp own', { kind: 'login', protocol: 'smtp', account: OWN }],
  ['login imap own', { kind: 'login', protocol: 'imap', account: OWN }],
  ['login pop3 own', { kind: 'login', protocol: 'pop3', account: OWN }],
  ['login smtp other', { kind: 'login', protocol: 'smtp', account: OTHER }],
  ['api read own', { kind: 'api', access: 'read', account: OWN }],
  ['api write own', { kind: 'api', access: 'write', account: OWN }],
  ['api read other', { kind: 'api', access: 'read', account: OTHER }],
  ['api write other', { kind: 'api', access: 'write', account: OTHER }],
  ['metrics', { kind: 'metrics' }],
  ['admin read', { kind: 'admin', access: 'read' }],
  ['admin write', { kind: 'admin', access: 'write' }],
  ['introspect', { kind: 'introspect' }],
];

// ✓ allowed · M account_mismatch · S missing_scope; columns in ACTIONS order.
const BOUND: Record<Scope, string> = {
  '*': '✓✓✓M✓✓MMMMMM',
  smtp: '✓SSMSSMMSSSS',
  imap: 'S✓SMSSMMSSSS',
  pop3: 'SS✓MSSMMSSSS',
  'api:read': 'SSSM✓SMMSMSS',
  'api:write': 'SSSMS✓MMSSMS',
  app: '✓✓✓M✓✓MMSMMS',
  internal: '✓✓✓MSSMMSSSS',
  metrics: 'SSSMSSMMMSSS',
  introspect: 'SSSMSSMMSSSM',
};
const UNBOUND: Record<Scope, string> = {
  '*': '✓✓✓✓✓✓✓✓✓✓✓✓',
  smtp: 'MSSMSSSSSSSS',
  imap: 'SMSSSSSSSSSS',
  pop3: 'SSMSSSSSSSSS',
  'api:read': 'SSSS✓S✓SS✓SS',
  // Writing unbound is administering: api:write alone is no administrator.
  'api:write': 'SSSSSSSSSSSS',
  app: 'SSSSSSSSSSSS',
  internal: '✓✓✓✓SSSSSSSS',
  metrics: 'SSSSSSSS✓SSS',
  introspect: 'SSSSSSSSSSS✓',
};

function record(scopes: Scope[], account: string | null, extra: Partial<KeyRecord> = {}): KeyRecord {
  return { ...newKey({ name: 't', scopes, account }).record, ...extra };
}
function acct(address: string, disabled = false): AccountRecord {
  return { address, aliases: [], displayName: null, disabled, createdAt: NOW.toISOString(), upstream: null };
}
const code = (d: ReturnType<typeof decide>) => (d.allowed ? '✓' : d.reason === 'account_mismatch' ? 'M' : d.reason === 'missing_scope' ? 'S' : d.reason);

describe('policy: every scope × action × bound/unbound', () => {
  for (const scope of SCOPES) {
    for (const [binding, table] of [['bound', BOUND], ['unbound', UNBOUND]] as const) {
      ACTIONS.forEach(([label, action], i) => {
        const expected = [...table[scope]][i];
        it(`${binding} ${scope} · ${label} → ${expected}`, () => {
          const key = record([scope], binding === 'bound' ? OWN : null);
          const target = action.kind === 'login' ? acct(action.account) : null;
          const d = decide(key, action, { ip: '192.0.2.1', now: NOW, account: binding === 'bound' ? acct(OWN) : target });
          expect(code(d)).toBe(expected);
          if (expected === 'S' && !d.allowed) expect(d.missingScope).toBeDefined();
        });
      });
    }
  }
});

describe('policy: key state, account and address', () => {
  const login: Action = { kind: 'login', protocol: 'imap', account: OWN };
  const ctx = { ip: '192.0.2.1', now: NOW, account: acct(OWN) };

  it('revoked beats everything else', () => {
    const key = record(['smtp'], OTHER, { revokedAt: '2026-01-01T00:00:00Z', expiresAt: '2026-01-01T00:00:00Z', allowedIps: ['10.0.0.0/8'] });
    expect(decide(key, login, ctx)).toEqual({ allowed: false, reason: 'revoked' });
  });
  it('a canary grants nothing: every action, bound or unbound, even with every scope', () => {
    for (const account of [OWN, null]) {
      const key = record(['*'], account, { canary: true });
      for (const [, action] of ACTIONS) expect(decide(key, action, ctx)).toEqual({ allowed: false, reason: 'canary' });
    }
  });
  it('expired at or after expiresAt, fine one ms before', () => {
    expect(decide(record(['imap'], OWN, { expiresAt: NOW.toISOString() }), login, ctx)).toEqual({ allowed: false, reason: 'expired' });
    expect(decide(record(['imap'], OWN, { expiresAt: new Date(NOW.getTime() + 1).toISOString() }), login, ctx)).toEqual({ allowed: true });
  });
  it('allowedIps: inside passes, outside fails, IPv4-mapped IPv6 counts as IPv4', () => {
    const key = record(['imap'], OWN, { allowedIps: ['10.1.0.0/16', '2001:db8::/32'] });
    expect(decide(key, login, { ...ctx, ip: '10.1.2.3' }).allowed).toBe(true);
    expect(decide(key, login, { ...ctx, ip: '::ffff:10.1.2.3' }).allowed).toBe(true);
    expect(decide(key, login, { ...ctx, ip: '2001:db8::7' }).allowed).toBe(true);
    expect(decide(key, login, { ...ctx, ip: '10.2.0.1' })).toEqual({ allowed: false, reason: 'ip_not_allowed' });
    expect(decide(key, login, { ...ctx, ip: 'garbage' })).toEqual({ allowed: false, reason: 'ip_not_allowed' });
  });
  it('a disabled account refuses its keys, and an unbound internal key logging in to it', () => {
    expect(decide(record(['*'], OWN), login, { ...ctx, account: acct(OWN, true) })).toEqual({ allowed: false, reason: 'account_disabled' });
    expect(decide(record(['internal'], null), login, { ...ctx, account: acct(OWN, true) })).toEqual({ allowed: false, reason: 'account_disabled' });
  });
  it('each reason is distinct', () => {
    const reasons = new Set([
      decide(record(['imap'], OWN, { revokedAt: NOW.toISOString() }), login, ctx),
      decide(record(['imap'], OWN, { expiresAt: '2020-01-01T00:00:00Z' }), login, ctx),
      decide(record(['imap'], OWN, { allowedIps: ['10.0.0.1'] }), login, ctx),
      decide(record(['imap'], OWN), login, { ...ctx, account: acct(OWN, true) }),
      decide(record(['imap'], OTHER), login, { ...ctx, account: acct(OTHER) }),
      decide(record(['smtp'], OWN), login, ctx),
    ].map((d) => (d.allowed ? 'ok' : d.reason)));
    expect([...reasons].sort()).toEqual(['account_disabled', 'account_mismatch', 'expired', 'ip_not_allowed', 'missing_scope', 'revoked']);
  });
});

describe('scopes', () => {
  it('expands aliases, splits commas, dedupes', () => {
    expect(normalizeScopes(['api'])).toEqual(['api:read', 'api:write']);
    expect(normalizeScopes(['imap-proxy,smtp', 'smtp'])).toEqual(['smtp', 'imap']);
    expect(normalizeScopes(['*'])).toEqual(['*']);
  });
  it('refuses unknown names', () => {
    expect(() => normalizeScopes(['root'])).toThrow(UnknownScopeError);
  });
  it('administrator keys are unbound with * or both api scopes', () => {
    expect(isAdminKey({ account: null, scopes: ['*'] })).toBe(true);
    expect(isAdminKey({ account: null, scopes: normalizeScopes(['api']) })).toBe(true);
    expect(isAdminKey({ account: OWN, scopes: ['*'] })).toBe(false);
    expect(isAdminKey({ account: null, scopes: ['app'] })).toBe(false);
    expect(isAdminKey({ account: null, scopes: ['api:read'] })).toBe(false);
  });
});
