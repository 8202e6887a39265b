import { describe, expect, it } from 'vitest';
import { checkAccountUpstream, parseDomainRoutes, Router, RouteError, type LocalMailboxRoute } from '../../src/backends/routing.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { isMailboxSafeAddress } from '../../src/mailbox/index.js';
import { account } from '../backends/helpers.js';

/** The local mailbox as a layer of routes (src/backends/routing.ts), and who may have a Maildir there. */

const LOCAL: LocalMailboxRoute = {
  sockets: { imap: '/run/kg/keygate-imap', pop3: '/run/kg/keygate-pop3', lmtp: '/run/kg/lmtp' },
  master: { user: 'keygate', password: 'per-boot-secret', separator: '*' },
};
const domains = JSON.stringify({ 'elsewhere.org': { imap: { host: 'imap.elsewhere.org' } } });
const config = loadConfig({ env: {}, flags: { mailbox: 'local', 'upstream.domains': domains, 'upstream.master.user': 'm', 'upstream.master.password': 'mp' } });
const router = new Router(config, LOCAL);

describe('routes with the local mailbox', () => {
  it('makes it the default IMAP and POP3 upstream: its socket, its master login, this boot\'s password', () => {
    for (const p of ['imap', 'pop3'] as const) {
      const r = router.resolve(account('alice@example.com'), p)!;
      expect(r).toMatchObject({ source: 'local', server: { socket: LOCAL.sockets[p], tls: 'none', login: 'master' }, user: 'alice@example.com' });
      expect(r.login).toEqual({ mode: 'master', user: 'alice@example.com', style: 'separator', masterUser: 'keygate', masterPassword: 'per-boot-secret', separator: '*' });
    }
    expect(router.isLocal(account('alice@example.com'))).toBe(true);
    expect(router.localDelivery()).toMatchObject({ server: { socket: LOCAL.sockets.lmtp, login: 'lmtp' }, login: { mode: 'lmtp' } });
  });

  it('leaves domain and account routes that name a host where they lead, with their own master user', () => {
    const byDomain = router.resolve(account('bob@elsewhere.org'), 'imap')!;
    expect(byDomain).toMatchObject({ source: 'domain', server: { host: 'imap.elsewhere.org', tls: 'starttls' }, login: { masterUser: 'm' } });
    expect(byDomain.server.socket).toBeUndefined();
    expect(router.isLocal(account('bob@elsewhere.org'))).toBe(false);
    const own = router.resolve(account('carol@example.com', { imap: { host: 'own.example.net' } }), 'imap')!;
    expect(own).toMatchObject({ source: 'account', server: { host: 'own.example.net' } });
    expect(own.server.socket).toBeUndefined();
    expect(router.isLocal(account('carol@example.com', { imap: { host: 'own.example.net' } }))).toBe(false);
    // SMTP is per recipient: the sender's own route is the relay, none here.
    expect(router.resolve(account('alice@example.com'), 'smtp')).toBeNull();
  });

  it('refuses an address that cannot name a directory of its own', () => {
    for (const bad of ['..@example.com', 'run@..', 'a@../state', 'x/y@example.com']) {
      expect(() => router.resolve(account(bad), 'imap'), bad).toThrow(RouteError);
      expect(router.isLocal(account(bad)), bad).toBe(false);
    }
  });

  it('never takes a socket from an operator\'s route (API or upstream.domains)', () => {
    expect(checkAccountUpstream({ imap: { socket: '/run/dovecot/auth-master' } })).toBe('imap.socket: unknown field');
    expect(() => parseDomainRoutes(JSON.stringify({ 'example.com': { smtp: { socket: '/tmp/x' } } }))).toThrow(/smtp\.socket: unknown field/);
  });

  it('is refused beside a default IMAP or POP3 upstream, which it replaces', () => {
    expect(() => loadConfig({ env: {}, flags: { mailbox: 'local', 'upstream.imap.host': 'imap.example.com' } })).toThrow(ConfigError);
    expect(() => loadConfig({ env: { KEYGATE_MAILBOX: 'locla' } })).toThrow('invalid setting mailbox: expected none or local (got "locla")');
    // An SMTP upstream is the relay for other recipients.
    expect(loadConfig({ env: {}, flags: { mailbox: 'local', 'upstream.smtp.host': 'relay.example.com' } }).mailbox).toBe('local');
  });
});

describe('addresses that can hold a Maildir', () => {
  const cases: [string, boolean][] = [
    ['alice@example.com', true],
    ['alice+tag@example.com', true],
    ['first.last@mail.example.co.uk', true],
    ["o'brien@xn--bcher-kva.example", true],
    ['.alice@example.com', false],
    ['alice.@example.com', false],
    ['al..ice@example.com', false],
    ['..@example.com', false],
    ['alice@..', false],
    ['alice@-example.com', false],
    ['alice@example..com', false],
    ['a/b@example.com', false],
    ['ünï@example.com', false],
    ['alice@exämple.com', false],
    ['@example.com', false],
    ['alice', false],
    [`${'a'.repeat(65)}@example.com`, false],
  ];
  it.each(cases)('%s → %s', (address, safe) => {
    expect(isMailboxSafeAddress(address)).toBe(safe);
  });
});
