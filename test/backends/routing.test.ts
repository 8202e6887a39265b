import { describe, expect, it } from 'vitest';
import { createBackends } from '../../src/backends/index.js';
import { parseDomainRoutes, Router, RouteError } from '../../src/backends/routing.js';
import { sealSecret, secretBox } from '../../src/backends/secret.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { account, memoryLogger } from './helpers.js';

const base = {
  secret: 'routing-test-secret-0123456789',
  'upstream.imap.host': 'default.imap.test',
  'upstream.imap.tls': 'implicit',
  'upstream.pop3.host': 'default.pop3.test',
  'upstream.master.user': 'master',
  'upstream.master.password': 'master-pw',
};

describe('upstream routing', () => {
  const domains = JSON.stringify({
    'example.org': { imap: { host: 'org.imap.test', port: 1143, tls: 'none' }, smtp: { host: 'org.lmtp.test', login: 'lmtp', tls: 'none' }, master: { user: 'orgmaster', password: 'org-pw' } },
  });
  const router = new Router(loadConfig({ env: {}, flags: { ...base, 'upstream.domains': domains } }));

  it('falls back to the default route, with the usual port for the TLS mode', () => {
    const r = router.resolve(account('a@example.com'), 'imap')!;
    expect(r.source).toBe('default');
    expect(r.server).toMatchObject({ host: 'default.imap.test', port: 993, tls: 'implicit', verifyCert: true, trusted: false });
    expect(r.login).toMatchObject({ mode: 'master', user: 'a@example.com', masterUser: 'master', style: 'separator', separator: '*' });
  });

  it('prefers the domain route over the default, field by field, with its own master user', () => {
    const r = router.resolve(account('b@example.org'), 'imap')!;
    expect(r.source).toBe('domain');
    expect(r.server).toMatchObject({ host: 'org.imap.test', port: 1143, tls: 'none' });
    expect(r.login).toMatchObject({ mode: 'master', masterUser: 'orgmaster', masterPassword: 'org-pw' });
    expect(router.resolve(account('b@example.org'), 'smtp')).toMatchObject({ server: { host: 'org.lmtp.test', port: 24 }, login: { mode: 'lmtp' } });
    // the domain says nothing about pop3: default applies
    expect(router.resolve(account('b@example.org'), 'pop3')).toMatchObject({ source: 'default', server: { host: 'default.pop3.test', port: 110 } });
  });

  it('prefers the account route over domain and default', () => {
    const acct = account('c@example.org', { imap: { host: 'own.imap.test', port: 2143 }, username: 'c-upstream' });
    const r = router.resolve(acct, 'imap')!;
    expect(r.source).toBe('account');
    expect(r.server).toMatchObject({ host: 'own.imap.test', port: 2143, tls: 'none' }); // tls still from the domain
    expect(r.user).toBe('c-upstream');
    expect(r.login).toMatchObject({ mode: 'master', user: 'c-upstream' });
  });

  it('an account may switch only the login mode and use its sealed password', () => {
    const cfg = loadConfig({ env: {}, flags: base });
    const sealed = sealSecret(secretBox(cfg.secret)!, 'pw-of-d', 'd@example.com');
    const r = new Router(cfg).resolve(account('d@example.com', { imap: { login: 'account' }, password: sealed }), 'imap')!;
    expect(r.source).toBe('default');
    expect(r.login).toEqual({ mode: 'account', user: 'd@example.com', password: 'pw-of-d' });
  });

  it('returns null when no layer names a host, and says which protocols have a backend', () => {
    expect(router.resolve(account('a@example.com'), 'smtp')).toBeNull();
    expect(router.hasRoutes('smtp')).toBe(true); // a domain route names an smtp host
    // Every protocol has its backend (routes are resolved at each login); `unrouted` names those no setting routes.
    const none = createBackends(loadConfig({ env: {}, flags: {} }), null as never, memoryLogger().logger);
    expect(none.unrouted).toEqual(['imap', 'pop3', 'smtp']);
    expect(none.imap).not.toBeNull();
    const some = createBackends(loadConfig({ env: {}, flags: base }), null as never, memoryLogger().logger);
    expect(some.unrouted).toEqual(['smtp']);
    void none.close();
    void some.close();
  });

  it('refuses unusable account records and missing credentials with a RouteError', () => {
    expect(() => router.resolve(account('e@example.com', { imap: { tls: 'sometimes' } }), 'imap')).toThrow(RouteError);
    expect(() => router.resolve(account('e@example.com', { imap: { login: 'lmtp' } }), 'imap')).toThrow(/not a login mode for imap/);
    expect(() => router.resolve(account('e@example.com', { password: 'plain-text!' }), 'imap')).toThrow(/sealed/);
    expect(() => router.resolve(account('e@example.com', { imap: { login: 'account' } }), 'imap')).toThrow(/no stored upstream password/);
    const noMaster = new Router(loadConfig({ env: {}, flags: { 'upstream.imap.host': 'h' } }));
    expect(() => noMaster.resolve(account('e@example.com'), 'imap')).toThrow(/no master user/);
  });
});

describe('upstream settings validation', () => {
  const load = (flags: Record<string, unknown>) => () => loadConfig({ env: {}, flags });

  it('names the bad setting', () => {
    expect(load({ 'upstream.imap.tls': 'maybe' })).toThrow(ConfigError);
    expect(load({ 'upstream.imap.tls': 'maybe' })).toThrow(/upstream\.imap\.tls/);
    expect(load({ 'upstream.pop3.login': 'lmtp' })).toThrow(/upstream\.pop3\.login/);
    expect(load({ 'upstream.smtp.masterStyle': 'x' })).toThrow(/upstream\.smtp\.masterStyle/);
    expect(load({ 'upstream.smtp.xclient': true })).toThrow(/upstream\.smtp\.xclient.*trusted/);
    expect(load({ 'upstream.domains': '{not json' })).toThrow(/upstream\.domains: not valid JSON/);
    expect(load({ 'upstream.domains': '{"example.com": {"imap": {"prot": 1}}}' })).toThrow(/upstream\.domains.*imap\.prot: unknown field/);
    expect(load({ 'upstream.domains': '{"example.com": {"imap": {"port": 70000}}}' })).toThrow(/imap\.port: invalid value/);
  });

  it('reads the settings from KEYGATE_* environment variables', () => {
    const c = loadConfig({
      env: {
        KEYGATE_UPSTREAM_IMAP_HOST: '10.0.0.5',
        KEYGATE_UPSTREAM_IMAP_TLS: 'none',
        KEYGATE_UPSTREAM_SMTP_LOGIN: 'lmtp',
        KEYGATE_UPSTREAM_MASTER_USER: 'm',
        KEYGATE_UPSTREAM_LOGIN_TIMEOUT: '5s',
        KEYGATE_UPSTREAM_DOMAINS: '{"a.test": {"pop3": {"host": "p.a.test"}}}',
        KEYGATE_NGINX_AUTH_SECRET: 's',
      },
    });
    expect(c.upstream.imap).toMatchObject({ host: '10.0.0.5', tls: 'none' });
    expect(c.upstream.smtp.login).toBe('lmtp');
    expect(c.upstream.loginTimeout).toBe(5000);
    expect(parseDomainRoutes(c.upstream.domains).get('a.test')).toEqual({ pop3: { host: 'p.a.test' } });
    expect(c.nginx.authSecret).toBe('s');
  });
});
