import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAutoconfig } from '../../src/setup/autoconfig.js';
import { MemorySetupLinkBackend, SetupLinks } from '../../src/setup/setup-links.js';
import { HOSTNAME, INFO, setupApp } from './helpers.js';

interface Server {
  '@_type': string;
  hostname: string;
  port: number;
  socketType: string;
  authentication: string;
  username: string;
}

const parser = new XMLParser({ ignoreAttributes: false, isArray: (name) => name === 'incomingServer' || name === 'outgoingServer' || name === 'domain' });

function parse(xml: string) {
  expect(XMLValidator.validate(xml)).toBe(true);
  const doc = parser.parse(xml) as { clientConfig: { '@_version': string; emailProvider: Record<string, unknown> & { incomingServer?: Server[]; outgoingServer?: Server[] } } };
  return doc.clientConfig;
}

const brief = (s: Server) => `${s['@_type']} ${s.hostname}:${s.port} ${s.socketType}`;

describe('buildAutoconfig', () => {
  it('lists IMAP then POP3 incoming and SMTP outgoing, implicit TLS before STARTTLS', () => {
    const cc = parse(buildAutoconfig(INFO, { domain: 'Example.com' }));
    expect(cc['@_version']).toBe('1.1');
    const p = cc.emailProvider;
    expect(p['@_id']).toBe('example.com');
    expect(p.domain).toEqual(['example.com']);
    expect(p.incomingServer!.map(brief)).toEqual([
      'imap imap.example.com:993 SSL',
      'imap imap.example.com:143 STARTTLS',
      'pop3 pop.example.com:995 SSL',
      'pop3 pop.example.com:110 STARTTLS',
    ]);
    expect(p.outgoingServer!.map(brief)).toEqual(['smtp mail.example.com:465 SSL', 'smtp mail.example.com:587 STARTTLS']);
    for (const s of [...p.incomingServer!, ...p.outgoingServer!]) {
      expect(s.username).toBe('%EMAILADDRESS%');
      expect(s.authentication).toBe('password-cleartext');
    }
  });

  it('leaves out protocols that are not advertised and ports set to 0', () => {
    const info = { ...INFO, pop3: { ...INFO.pop3, enabled: false }, smtp: { ...INFO.smtp, securePort: 0 } };
    const p = parse(buildAutoconfig(info, { domain: 'example.com' })).emailProvider;
    expect(p.incomingServer!.map(brief)).toEqual(['imap imap.example.com:993 SSL', 'imap imap.example.com:143 STARTTLS']);
    expect(p.outgoingServer!.map(brief)).toEqual(['smtp mail.example.com:587 STARTTLS']);
  });

  it('escapes what it embeds', () => {
    const xml = buildAutoconfig({ ...INFO, imap: { ...INFO.imap, serverName: 'a<b>&"c' } }, { domain: 'example.com', displayName: 'R&D <mail>' });
    const p = parse(xml).emailProvider;
    expect(xml).toContain('a&lt;b&gt;&amp;&quot;c');
    expect(p.displayName).toBe('R&D <mail>');
  });
});

describe('autoconfig routes', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await setupApp({ config: { public: INFO, hostname: HOSTNAME }, links: new SetupLinks(new MemorySetupLinkBackend()) });
  });
  afterAll(() => app.close());

  it('GET /.well-known/autoconfig/mail/config-v1.1.xml answers for the Host domain, unauthenticated', async () => {
    const res = await app.inject({ url: '/.well-known/autoconfig/mail/config-v1.1.xml', headers: { host: 'example.org' } });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^(text|application)\/xml\b/);
    const p = parse(res.body).emailProvider;
    expect(p.domain).toEqual(['example.org']);
    expect(p.incomingServer![0]!.hostname).toBe('imap.example.com');
    expect(res.body).not.toMatch(/kg_/);
  });

  it('GET /mail/config-v1.1.xml?emailaddress=… answers for the address domain (autoconfig.<domain> host)', async () => {
    const res = await app.inject({ url: '/mail/config-v1.1.xml?emailaddress=alice%40Mail.Example.NET', headers: { host: 'autoconfig.mail.example.net' } });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^(text|application)\/xml\b/);
    const p = parse(res.body).emailProvider;
    expect(p.domain).toEqual(['mail.example.net']);
    expect(p.incomingServer!.map(brief)[0]).toBe('imap imap.example.com:993 SSL');
    expect(p.outgoingServer!.map(brief)[0]).toBe('smtp mail.example.com:465 SSL');
  });

  it('strips the autoconfig. prefix and the port of the Host; falls back to the configured host name', async () => {
    const a = await app.inject({ url: '/mail/config-v1.1.xml', headers: { host: 'autoconfig.example.io:8080' } });
    expect(parse(a.body).emailProvider.domain).toEqual(['example.io']);
    const b = await app.inject({ url: '/mail/config-v1.1.xml', headers: { host: '127.0.0.1:8080' } });
    expect(parse(b.body).emailProvider.domain).toEqual([HOSTNAME]);
  });

  it('refuses an emailaddress that is not an address with 400 and the JSON error shape', async () => {
    for (const bad of ['nobody', 'a@b@c', '<x>@example.com', 'a@-bad-.com']) {
      const res = await app.inject({ url: `/mail/config-v1.1.xml?emailaddress=${encodeURIComponent(bad)}` });
      expect(res.statusCode, bad).toBe(400);
      expect(res.json().error.code).toBe('validation');
    }
    const long = await app.inject({ url: `/mail/config-v1.1.xml?emailaddress=${'a'.repeat(300)}%40example.com` });
    expect(long.statusCode).toBe(400);
  });
});
