import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';
import { parse as parsePlist, type PlistValue } from 'plist';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator } from '../../src/auth/authenticate.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { buildApp } from '../../src/http/app.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import { issueKey } from '../../src/services/keys.js';
import { MOBILECONFIG_CONTENT_TYPE } from '../../src/setup/mobileconfig.js';
import { MemorySetupLinkBackend, SetupLinks, type SetupLinkBackend } from '../../src/setup/setup-links.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { freePort } from '../helpers/free-port.js';
import { startKeygate, type SingleKeygate } from '../helpers/keygate.js';
import { redisAvailable } from '../helpers/redis-server.js';
import { cmsVerify, opensslSigner, tempDir } from '../setup/helpers.js';
import { cleanupFixtures, createFixture, type Fixture } from './fixture.js';

/*
 * Issue 7, items 3 and 4, through the whole server (the test harness's `startServer`) with a real
 * SQLite store, the control plane and the IMAP/SMTP listeners on free ports.
 * A profile from POST …/mobile is verified with `openssl cms -verify`, read
 * back, and its key logs in to Keygate's own IMAP (imapflow) and SMTP
 * (nodemailer) at the hosts and ports the profile names.
 */

const ACCOUNT = 'alice@example.com';
const haveOpenssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

type Dict = { [key: string]: PlistValue };
const mailPayload = (xml: string) => ((parsePlist(xml) as Dict).PayloadContent as Dict[])[0]!;

async function imapLogin(host: string, port: number, secure: boolean, user: string, pass: string): Promise<boolean> {
  const client = new ImapFlow({
    host,
    port,
    secure,
    doSTARTTLS: !secure,
    auth: { user, pass },
    tls: { rejectUnauthorized: false },
    logger: false,
    verifyOnly: true,
    connectionTimeout: 5000,
    greetingTimeout: 5000,
  } as ConstructorParameters<typeof ImapFlow>[0]);
  try {
    await client.connect();
    return Boolean(client.authenticated) && client.secureConnection;
  } catch (err) {
    if ((err as { authenticationFailed?: boolean }).authenticationFailed) return false;
    throw err;
  } finally {
    client.close();
  }
}

async function smtpLogin(host: string, port: number, secure: boolean, user: string, pass: string): Promise<boolean> {
  const transport = nodemailer.createTransport({ host, port, secure, requireTLS: !secure, auth: { user, pass }, tls: { rejectUnauthorized: false } });
  try {
    return await transport.verify();
  } catch (err) {
    if ((err as { responseCode?: number }).responseCode === 535) return false;
    throw err;
  } finally {
    transport.close();
  }
}

describe.skipIf(!haveOpenssl)('POST /api/smtp-credentials/mobile on a running Keygate (SQLite, real ports)', () => {
  const tmp = tempDir();
  let server: SingleKeygate;
  let base: string;
  let userKey: string;
  let ports: { http: number; imap: number; imaps: number; pop3: number; pop3s: number; smtp: number; smtps: number };

  beforeAll(async () => {
    // Fixed ahead, because the profiles advertise them.
    const [http, imap, imaps, pop3, pop3s, smtp, smtps] = (await Promise.all(Array.from({ length: 7 }, freePort))) as [number, number, number, number, number, number, number];
    ports = { http, imap, imaps, pop3, pop3s, smtp, smtps };
    const flags: Record<string, unknown> = {
      hostname: '127.0.0.1',
      'tls.dir': join(tmp.dir, 'certs'),
      'http.port': http,
      'rateLimit.credentials.max': 10_000,
      'setup.linkTtl': '2m',
    };
    for (const [name, port, securePort] of [['imap', imap, imaps], ['pop3', pop3, pop3s], ['smtp', smtp, smtps]] as const) {
      flags[`${name}.port`] = port;
      flags[`${name}.securePort`] = securePort;
      // What profiles advertise: the ports this server really listens on.
      flags[`public.${name}.port`] = port;
      flags[`public.${name}.securePort`] = securePort;
    }
    server = await startKeygate({ http: true, flags });
    base = `http://127.0.0.1:${http}`;
    userKey = (await issueKey(server.store, 'operator', { name: 'dashboard', scopes: ['app'], account: ACCOUNT })).key;
    await server.store.updateAccount(ACCOUNT, { displayName: 'Alice Liddell' });
  });
  afterAll(async () => {
    await server?.close();
    tmp.cleanup();
  });

  const mobile = (body: Record<string, unknown>, headers: Record<string, string> = {}) =>
    fetch(`${base}/api/smtp-credentials/mobile`, {
      method: 'POST',
      headers: { authorization: `Bearer ${userKey}`, 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ name: 'Alice’s iPhone', platform: 'ios', deviceId: 'iphone-1', ...body }),
    });
  const liveKeys = async () => (await server.store.listKeys({ account: ACCOUNT })).items.filter((k) => k.revokedAt === null);

  it('format "mobileconfig": a profile signed with the TLS certificate whose key logs in to IMAP and SMTP where it says', async () => {
    const res = await mobile({ format: 'mobileconfig' });
    expect(res.status).toBe(201);
    expect(res.headers.get('content-type')).toBe(MOBILECONFIG_CONTENT_TYPE);
    expect(res.headers.get('content-disposition')).toBe(`attachment; filename="${ACCOUNT}.mobileconfig"`);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const der = Buffer.from(await res.arrayBuffer());

    const verified = await cmsVerify(der);
    expect(verified.ok, verified.stderr).toBe(true);
    // Signed by the server's own (self-signed) TLS certificate: it verifies with that certificate as the only trust anchor.
    const anchored = await cmsVerify(der, server.tls.certPem(), { purposeAny: true });
    expect(anchored.ok, anchored.stderr).toBe(true);

    const mail = mailPayload(verified.content);
    expect(mail).toMatchObject({
      PayloadType: 'com.apple.mail.managed',
      EmailAccountType: 'EmailTypeIMAP',
      EmailAddress: ACCOUNT,
      EmailAccountName: 'Alice Liddell',
      IncomingMailServerHostName: '127.0.0.1',
      IncomingMailServerPortNumber: ports.imaps,
      IncomingMailServerUseSSL: true,
      IncomingMailServerUsername: ACCOUNT,
      OutgoingMailServerHostName: '127.0.0.1',
      OutgoingMailServerPortNumber: ports.smtps,
      OutgoingMailServerUseSSL: true,
      OutgoingMailServerUsername: ACCOUNT,
    });
    const key = mail.IncomingPassword as string;
    expect(key).toMatch(/^kg_[0-9A-Za-z]{49}$/);
    expect(mail.OutgoingPassword).toBe(key);

    const host = mail.IncomingMailServerHostName as string;
    const user = mail.IncomingMailServerUsername as string;
    // Where the profile points (implicit TLS), and over STARTTLS on the other port.
    expect(await imapLogin(host, mail.IncomingMailServerPortNumber as number, true, user, key)).toBe(true);
    expect(await imapLogin(host, ports.imap, false, user, key)).toBe(true);
    const smtpHost = mail.OutgoingMailServerHostName as string;
    expect(await smtpLogin(smtpHost, mail.OutgoingMailServerPortNumber as number, true, mail.OutgoingMailServerUsername as string, key)).toBe(true);
    expect(await smtpLogin(smtpHost, ports.smtp, false, user, key)).toBe(true);
    // The key is the device's mail key, listed like any other.
    const listed = (await (await fetch(`${base}/api/smtp-credentials`, { headers: { authorization: `Bearer ${userKey}` } })).json()) as { keys: { name: string; platform?: string; deviceId?: string; scopes: string[] }[] };
    expect(listed.keys).toContainEqual(expect.objectContaining({ name: 'Alice’s iPhone', platform: 'ios', deviceId: 'iphone-1', scopes: ['smtp', 'imap', 'pop3'] }));
  });

  it('Accept: application/x-apple-aspen-config answers with a profile too; the device’s previous key stops working', async () => {
    const first = await mobile({ deviceId: 'ipad-1' }, { accept: MOBILECONFIG_CONTENT_TYPE });
    const second = await mobile({ deviceId: 'ipad-1' }, { accept: MOBILECONFIG_CONTENT_TYPE });
    expect([first.status, second.status]).toEqual([201, 201]);
    expect(second.headers.get('content-type')).toBe(MOBILECONFIG_CONTENT_TYPE);
    const keyOf = async (res: Response) => mailPayload((await cmsVerify(Buffer.from(await res.arrayBuffer()))).content).IncomingPassword as string;
    const [oldKey, newKey] = [await keyOf(first), await keyOf(second)];
    expect(await imapLogin('127.0.0.1', ports.imaps, true, ACCOUNT, oldKey)).toBe(false);
    expect(await imapLogin('127.0.0.1', ports.imaps, true, ACCOUNT, newKey)).toBe(true);
  });

  it('plain JSON stays as it was: the key and its record, nothing more', async () => {
    const res = await mobile({ deviceId: 'pixel-1', platform: 'android' });
    expect(res.status).toBe(201);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body.apiKey).toMatch(/^kg_/);
    for (const f of ['setupUrl', 'setupExpiresAt', 'qrSvg', 'qrPngDataUrl']) expect(body).not.toHaveProperty(f);
    // An explicit format: "json" wins over an Accept header that asks for the profile.
    const json = await mobile({ deviceId: 'pixel-1', platform: 'android', format: 'json' }, { accept: MOBILECONFIG_CONTENT_TYPE });
    expect(json.headers.get('content-type')).toMatch(/^application\/json/);
  });

  it('setupLink: a one-time URL with QR codes; the first GET serves the profile, the second is 410', async () => {
    const started = Date.now();
    const res = await mobile({ setupLink: true, deviceId: 'iphone-2' });
    expect(res.status).toBe(201);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as { id: string; apiKey: string; setupUrl: string; setupExpiresAt: string; qrSvg: string; qrPngDataUrl: string };
    expect(body.setupUrl).toMatch(new RegExp(`^${base.replace(/[.]/g, '\\.')}/setup/[A-Za-z0-9_-]{43}$`));
    // setup.linkTtl is 2m here.
    expect(Date.parse(body.setupExpiresAt) - started).toBeGreaterThan(110_000);
    expect(Date.parse(body.setupExpiresAt) - started).toBeLessThan(130_000);
    expect(body.qrSvg).toMatch(/<svg[\s\S]*<\/svg>\s*$/);
    expect(Buffer.from(body.qrPngDataUrl.replace(/^data:image\/png;base64,/, ''), 'base64').subarray(0, 8)).toEqual(Buffer.from('89504e470d0a1a0a', 'hex'));

    // The QR images can be fetched without using the link up.
    const svg = await fetch(`${body.setupUrl}/qr.svg`);
    expect(svg.status).toBe(200);
    expect(svg.headers.get('content-type')).toMatch(/^image\/svg\+xml/);
    const png = await fetch(`${body.setupUrl}/qr.png`);
    expect(png.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await png.arrayBuffer()).subarray(1, 4).toString()).toBe('PNG');

    const served = await fetch(body.setupUrl);
    expect(served.status).toBe(200);
    expect(served.headers.get('content-type')).toBe(MOBILECONFIG_CONTENT_TYPE);
    const verified = await cmsVerify(Buffer.from(await served.arrayBuffer()), server.tls.certPem(), { purposeAny: true });
    expect(verified.ok, verified.stderr).toBe(true);
    const mail = mailPayload(verified.content);
    expect(mail.IncomingPassword).toBe(body.apiKey);
    expect(await imapLogin('127.0.0.1', mail.IncomingMailServerPortNumber as number, true, ACCOUNT, body.apiKey)).toBe(true);
    expect(await smtpLogin('127.0.0.1', mail.OutgoingMailServerPortNumber as number, true, ACCOUNT, body.apiKey)).toBe(true);

    const again = await fetch(body.setupUrl);
    expect(again.status).toBe(410);
    expect(((await again.json()) as { error: { code: string } }).error.code).toBe('gone');
    expect((await fetch(`${body.setupUrl}/qr.svg`)).status).toBe(410);
  });

  it('setupLink with qr: false leaves the QR codes out', async () => {
    const body = (await (await mobile({ setupLink: true, qr: false, deviceId: 'iphone-3' })).json()) as Record<string, unknown>;
    expect(body.setupUrl).toEqual(expect.any(String));
    expect(body).not.toHaveProperty('qrSvg');
    expect(body).not.toHaveProperty('qrPngDataUrl');
  });

  it('the unauthenticated setup routes are served by the same control plane (autoconfig)', async () => {
    const res = await fetch(`${base}/mail/config-v1.1.xml?emailaddress=${encodeURIComponent(ACCOUNT)}`);
    expect(res.status).toBe(200);
    const xml = await res.text();
    expect(xml).toContain(`<port>${ports.imaps}</port>`);
    expect(xml).toContain('<username>%EMAILADDRESS%</username>');
  });

  it('bad requests are 400 and make no key', async () => {
    const before = (await liveKeys()).length;
    for (const extra of [{ format: 'pdf' }, { setupLink: 'yes' }, { qr: 'maybe' }]) {
      const res = await mobile({ deviceId: 'bad-1', ...extra });
      expect(res.status, JSON.stringify(extra)).toBe(400);
    }
    expect((await liveKeys()).length).toBe(before);
  });
});

describe.skipIf(!haveOpenssl)('mobile profiles and setup links: configuration and failures', () => {
  const tmp = tempDir();
  const logger = createLogger('silent');
  let keyFiles: { cert: string; key: string; certPem: string };
  let otherKey: string;

  beforeAll(() => {
    const ec = opensslSigner('ec', 'Keygate profile signer (EC)');
    keyFiles = { cert: join(tmp.dir, 'signer.pem'), key: join(tmp.dir, 'signer.key'), certPem: ec.certPem };
    writeFileSync(keyFiles.cert, ec.certPem);
    writeFileSync(keyFiles.key, ec.keyPem);
    otherKey = join(tmp.dir, 'other.key');
    writeFileSync(otherKey, opensslSigner('rsa').keyPem);
  });
  afterAll(async () => {
    await cleanupFixtures();
    tmp.cleanup();
  });

  /** An app on a fresh SQLite store, built the way server.ts builds it, with a bound `app` key. */
  async function appWith(flags: Record<string, unknown>, tls?: { certPem(): string; keyPem(): string }, setupLinks?: SetupLinks) {
    const store = openSqliteStore(join(tmp.dir, `${Math.random().toString(36).slice(2)}.db`));
    const config = loadConfig({ env: {}, flags: { hostname: 'mail.example.test', 'rateLimit.credentials.max': 10_000, 'auth.failureDelay': '10ms', ...flags } });
    const metrics = new Metrics(store);
    const app = await buildApp({ config, store, logger, metrics, authenticator: new Authenticator({ store, logger, metrics, failureDelayMs: config.auth.failureDelay }), ...(tls && { tls }), ...(setupLinks && { setupLinks }) });
    const user = (await issueKey(store, 'operator', { name: 'u', scopes: ['app'], account: ACCOUNT })).key;
    const post = (body: Record<string, unknown>, headers: Record<string, string> = {}) =>
      app.inject({
        method: 'POST',
        url: '/api/smtp-credentials/mobile',
        headers: { authorization: `Bearer ${user}`, host: 'kg.example.test', ...headers },
        payload: { name: 'Phone', platform: 'ios', deviceId: 'd1', ...body },
      });
    const keys = async () => (await store.listKeys({ account: ACCOUNT })).items.filter((k) => k.revokedAt === null && k.deviceId !== null);
    return {
      app,
      store,
      post,
      keys,
      close: async () => {
        await app.close();
        await store.close();
      },
    };
  }

  it('setup.signingCert / setup.signingKey sign the profile (an EC certificate here) instead of the TLS pair', async () => {
    const tlsPair = opensslSigner('rsa', 'TLS');
    const a = await appWith({ 'setup.signingCert': keyFiles.cert, 'setup.signingKey': keyFiles.key }, { certPem: () => tlsPair.certPem, keyPem: () => tlsPair.keyPem });
    try {
      const res = await a.post({ format: 'mobileconfig' });
      expect(res.statusCode).toBe(201);
      const withSigner = await cmsVerify(res.rawPayload, keyFiles.certPem, { purposeAny: true });
      expect(withSigner.ok, withSigner.stderr).toBe(true);
      expect((await cmsVerify(res.rawPayload, tlsPair.certPem, { purposeAny: true })).ok).toBe(false);
    } finally {
      await a.close();
    }
  });

  it('a signing pair that cannot be used stops start-up naming the setting', async () => {
    await expect(appWith({ 'setup.signingCert': join(tmp.dir, 'missing.pem'), 'setup.signingKey': keyFiles.key })).rejects.toThrow(ConfigError);
    await expect(appWith({ 'setup.signingCert': join(tmp.dir, 'missing.pem'), 'setup.signingKey': keyFiles.key })).rejects.toThrow(/setup\.signingCert/);
    await expect(appWith({ 'setup.signingCert': keyFiles.cert, 'setup.signingKey': otherKey })).rejects.toThrow(/setup\.signingCert.*does not belong/);
    expect(() => loadConfig({ env: {}, flags: { 'setup.signingCert': keyFiles.cert } })).toThrow(/setup\.signingKey/);
    expect(() => loadConfig({ env: { KEYGATE_SETUP_LINK_TTL: '0' } })).toThrow(/setup\.linkTtl/);
    expect(() => loadConfig({ env: { KEYGATE_SETUP_LINK_TTL: '2d' } })).toThrow(/setup\.linkTtl/);
    expect(() => loadConfig({ env: { KEYGATE_PUBLIC_URL: 'ftp://x' } })).toThrow(/setup\.publicUrl/);
    expect(loadConfig({ env: { KEYGATE_PUBLIC_URL: 'https://kg.example.com', KEYGATE_SETUP_LINK_TTL: '5m' } }).setup).toMatchObject({
      publicUrl: 'https://kg.example.com',
      linkTtl: 300_000,
    });
  });

  it('setup.publicUrl is the origin of setup links and their QR codes', async () => {
    const a = await appWith({ 'setup.signingCert': keyFiles.cert, 'setup.signingKey': keyFiles.key, 'setup.publicUrl': 'https://keygate.example.com/' });
    try {
      const body = (await a.post({ setupLink: true })).json() as { setupUrl: string };
      expect(body.setupUrl).toMatch(/^https:\/\/keygate\.example\.com\/setup\/[A-Za-z0-9_-]{43}$/);
      const path = new URL(body.setupUrl).pathname;
      expect((await a.app.inject({ url: path })).statusCode).toBe(200);
      expect((await a.app.inject({ url: path })).statusCode).toBe(410);
    } finally {
      await a.close();
    }
  });

  it('no signer at all (no TLS provider, no setup.signingCert): 503 setup_unavailable and no key is made; JSON still works', async () => {
    const a = await appWith({});
    try {
      for (const [body, headers] of [[{ format: 'mobileconfig' }, {}], [{ setupLink: true }, {}], [{}, { accept: MOBILECONFIG_CONTENT_TYPE }]] as const) {
        const res = await a.post(body, headers);
        expect(res.statusCode, JSON.stringify(body)).toBe(503);
        expect(res.json().error.code).toBe('setup_unavailable');
      }
      expect(await a.keys()).toHaveLength(0);
      expect((await a.post({})).statusCode).toBe(201);
    } finally {
      await a.close();
    }
  });

  it('a profile that cannot be built (SMTP not advertised) is refused before the key exists', async () => {
    const a = await appWith({ 'setup.signingCert': keyFiles.cert, 'setup.signingKey': keyFiles.key, 'public.smtp.enabled': false });
    try {
      const res = await a.post({ setupLink: true });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toEqual({ error: { code: 'setup_unavailable', message: expect.stringMatching(/SMTP is not advertised/) } });
      expect(await a.keys()).toHaveLength(0);
    } finally {
      await a.close();
    }
  });

  it('a link that cannot be stored (links full, or their store down) is 503, and the key made for it is revoked', async () => {
    const failing: SetupLinkBackend = {
      kind: 'redis',
      put: async () => {
        throw new Error('connect ECONNREFUSED 127.0.0.1:6379');
      },
      take: async () => null,
      has: async () => false,
      close: async () => {},
    };
    for (const [backend, message] of [
      [new MemorySetupLinkBackend({ maxEntries: 0 }), /Too many pending setup links/],
      [failing, /setup-link store is unavailable/],
    ] as const) {
      const a = await appWith({ 'setup.signingCert': keyFiles.cert, 'setup.signingKey': keyFiles.key }, undefined, new SetupLinks(backend));
      try {
        const res = await a.post({ setupLink: true });
        expect(res.statusCode).toBe(503);
        expect(res.json().error).toMatchObject({ code: 'setup_unavailable', message: expect.stringMatching(message) });
        expect(await a.keys()).toHaveLength(0);
        // A profile straight in the response does not need the link store.
        expect((await a.post({ format: 'mobileconfig' })).statusCode).toBe(201);
      } finally {
        await a.close();
      }
    }
  });

  it('the admin route makes profiles for the account in the URL', async () => {
    const a = await appWith({ 'setup.signingCert': keyFiles.cert, 'setup.signingKey': keyFiles.key });
    try {
      const admin = (await issueKey(a.store, 'operator', { name: 'admin', scopes: ['*'] })).key;
      const res = await a.app.inject({
        method: 'POST',
        url: '/api/accounts/bob@example.com/smtp-credentials/mobile',
        headers: { authorization: `Bearer ${admin}` },
        payload: { name: 'Bob’s Mac', platform: 'macos', deviceId: 'mac-1', format: 'mobileconfig' },
      });
      expect(res.statusCode).toBe(201);
      const mail = mailPayload((await cmsVerify(res.rawPayload)).content);
      expect(mail.EmailAddress).toBe('bob@example.com');
      expect(mail.IncomingMailServerHostName).toBe('mail.example.test');
    } finally {
      await a.close();
    }
  });

  describe.skipIf(!redisAvailable())('with the Redis store', () => {
    let f: Fixture;
    beforeAll(async () => {
      f = await createFixture('redis', { flags: { 'setup.signingCert': keyFiles.cert, 'setup.signingKey': keyFiles.key } });
    });
    afterAll(() => f?.close());

    it('a link made by one instance is served once by another (links live in Redis)', async () => {
      const user = (await f.issue({ scopes: ['app'], account: ACCOUNT })).key;
      const res = await f.call(user, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: { name: 'Phone', platform: 'ios', deviceId: 'r1', setupLink: true, qr: false } });
      expect(res.statusCode).toBe(201);
      const path = new URL(res.json().setupUrl as string).pathname;
      const other = await f.sibling();
      const served = await other.inject({ url: path });
      expect(served.statusCode).toBe(200);
      expect(mailPayload((await cmsVerify(served.rawPayload)).content).IncomingPassword).toBe(res.json().apiKey);
      expect((await f.app.inject({ url: path })).statusCode).toBe(410);
      expect((await other.inject({ url: path })).statusCode).toBe(410);
    });
  });
});

if (!haveOpenssl) it.skip('openssl not found on PATH: skipping the profile tests (they verify signatures with openssl cms)', () => {});
