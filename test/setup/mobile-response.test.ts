import { join } from 'node:path';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyInstance } from 'fastify';
import { parse as parsePlist, type PlistValue } from 'plist';
import { Type } from 'typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator } from '../../src/auth/authenticate.js';
import { errorBody } from '../../src/http/errors.js';
import { clientSetupRoutes } from '../../src/http/routes/client-setup/index.js';
import { createLogger } from '../../src/log.js';
import { createMobileCredential } from '../../src/services/credentials.js';
import { issueKey } from '../../src/services/keys.js';
import { MOBILECONFIG_CONTENT_TYPE, MobileconfigError, type ProfileSigner } from '../../src/setup/mobileconfig.js';
import {
  buildMobileResponse,
  MobileSetupAdditions,
  MobileSetupFields,
  mobileSetupMode,
  preflightMobileSetup,
  requestOrigin,
} from '../../src/setup/mobile-response.js';
import { MemorySetupLinkBackend, SetupLinks } from '../../src/setup/setup-links.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { KeyStore } from '../../src/store/types.js';
import { cmsVerify, HOSTNAME, INFO, opensslSigner, tempDir } from './helpers.js';

type Dict = { [key: string]: PlistValue };
const mailPayload = (xml: string) => ((parsePlist(xml) as Dict).PayloadContent as Dict[])[0]!;

describe('mobileSetupMode', () => {
  it('setupLink wins; then format; then an Accept header that prefers the profile', () => {
    expect(mobileSetupMode({})).toBe('json');
    expect(mobileSetupMode({ format: 'mobileconfig' })).toBe('mobileconfig');
    expect(mobileSetupMode({ format: 'mobileconfig', setupLink: true })).toBe('setupLink');
    expect(mobileSetupMode({ setupLink: false, format: 'json', accept: MOBILECONFIG_CONTENT_TYPE })).toBe('json');
    expect(mobileSetupMode({ accept: MOBILECONFIG_CONTENT_TYPE })).toBe('mobileconfig');
    expect(mobileSetupMode({ accept: ['application/json', `${MOBILECONFIG_CONTENT_TYPE};q=1`] })).toBe('mobileconfig');
    expect(mobileSetupMode({ accept: `application/json, ${MOBILECONFIG_CONTENT_TYPE};q=0.5` })).toBe('json');
    expect(mobileSetupMode({ accept: `${MOBILECONFIG_CONTENT_TYPE};q=0` })).toBe('json');
    expect(mobileSetupMode({ accept: '*/*' })).toBe('json');
  });
});

describe('requestOrigin', () => {
  it('prefers the configured public URL, else the request’s scheme and a sane Host', () => {
    expect(requestOrigin({ protocol: 'http', host: 'x:1' }, HOSTNAME, 'https://kg.example.com/')).toBe('https://kg.example.com');
    expect(requestOrigin({ protocol: 'http', host: '127.0.0.1:8080' }, HOSTNAME)).toBe('http://127.0.0.1:8080');
    expect(requestOrigin({ protocol: 'https', host: 'kg.example.com' }, HOSTNAME)).toBe('https://kg.example.com');
    expect(requestOrigin({ protocol: 'http', host: 'evil.com/@x' }, HOSTNAME)).toBe(`https://${HOSTNAME}`);
  });
});

describe('preflightMobileSetup', () => {
  let signer: ProfileSigner;
  beforeAll(() => {
    signer = opensslSigner('rsa');
  });

  it('passes plain JSON without looking at anything, and checks servers and signer otherwise', () => {
    const broken = { certPem: '', keyPem: '' };
    expect(preflightMobileSetup({ request: {}, connectionInfo: INFO, signer: broken })).toBe('json');
    expect(preflightMobileSetup({ request: { format: 'mobileconfig' }, connectionInfo: INFO, signer })).toBe('mobileconfig');
    expect(() => preflightMobileSetup({ request: { format: 'mobileconfig' }, connectionInfo: INFO, signer: broken })).toThrow(MobileconfigError);
    const noSmtp = { ...INFO, smtp: { ...INFO.smtp, enabled: false } };
    expect(() => preflightMobileSetup({ request: { format: 'mobileconfig' }, connectionInfo: noSmtp, signer })).toThrow(MobileconfigError);
    expect(() => preflightMobileSetup({ request: { setupLink: true }, connectionInfo: INFO, signer })).toThrow(/setup links are not configured/);
  });
});

/**
 * The mobile route as the control plane should wire it (a copy of the
 * intended integration in src/http/routes/smtp-credentials), backed by a real
 * SQLite store, plus the client-setup plugin serving the link.
 */
describe('mobile route wiring, end to end', () => {
  let app: FastifyInstance;
  let store: KeyStore;
  let signer: ProfileSigner;
  let authenticator: Authenticator;
  let callerKey: string;
  const links = new SetupLinks(new MemorySetupLinkBackend(), { ttlMs: 60_000 });
  const tmp = tempDir();

  beforeAll(async () => {
    signer = opensslSigner('ec');
    store = openSqliteStore(join(tmp.dir, 'k.db'));
    const logger = createLogger('silent');
    authenticator = new Authenticator({ store, logger, failureDelayMs: 0 });
    const caller = await issueKey(store, 'operator', { name: 'dashboard', scopes: ['app'], account: 'alice@example.com' });
    callerKey = caller.key;

    const fastify = Fastify({ logger: false }).withTypeProvider<TypeBoxTypeProvider>();
    fastify.setErrorHandler((err, _req, reply) => {
      if (err instanceof MobileconfigError) return reply.code(503).send(errorBody('setup_unavailable', err.message));
      return reply.code((err as { statusCode?: number }).statusCode ?? 500).send(errorBody('error', (err as Error).message));
    });
    const MobileBody = Type.Object(
      { name: Type.String(), platform: Type.String(), deviceId: Type.String(), ...MobileSetupFields },
      { additionalProperties: false },
    );
    fastify.post(
      '/api/smtp-credentials/mobile',
      {
        schema: {
          body: MobileBody,
          response: { 201: Type.Object({ id: Type.String(), apiKey: Type.String(), ...MobileSetupAdditions.properties }) },
        },
      },
      async (req, reply) => {
        const creator = await authenticator.logIn({
          protocol: 'http',
          key: String(req.headers.authorization).slice(7),
          ip: req.ip,
          action: () => ({ kind: 'api', access: 'write', account: 'alice@example.com' }) as const,
        });
        if (creator.kind !== 'loggedIn') throw new Error(`the caller's key was ${creator.kind}`);
        const request = { format: req.body.format, setupLink: req.body.setupLink, qr: req.body.qr, accept: req.headers.accept };
        const connectionInfo = INFO;
        preflightMobileSetup({ request, connectionInfo, signer, links }); // before the key exists
        const { key, record } = await createMobileCredential(store, creator.key, 'alice@example.com', {
          name: req.body.name,
          platform: req.body.platform as 'ios',
          deviceId: req.body.deviceId,
        });
        const out = await buildMobileResponse({
          apiKey: key,
          key: record,
          account: { address: record.account!, displayName: 'Alice' },
          connectionInfo,
          signer,
          request,
          links,
          origin: requestOrigin(req, HOSTNAME),
        });
        // The 201 schema types the JSON body; the profile is raw bytes, which Fastify sends as-is.
        if (out.kind === 'profile') return reply.code(201).headers(out.headers).send(out.body as never);
        return reply.code(201).header('cache-control', 'no-store').send({ id: record.id, apiKey: key, ...out.additions });
      },
    );
    await fastify.register(clientSetupRoutes, { config: { public: INFO, hostname: HOSTNAME }, links });
    app = fastify as unknown as FastifyInstance;
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await store?.close();
    tmp.cleanup();
  });

  const mobile = (body: Record<string, unknown>, headers: Record<string, string> = {}) =>
    app.inject({
      method: 'POST',
      url: '/api/smtp-credentials/mobile',
      headers: { authorization: `Bearer ${callerKey}`, host: 'kg.example.com', ...headers },
      payload: { name: 'Alice’s iPhone', platform: 'ios', deviceId: 'iphone-1', ...body },
    });

  const logsIn = async (username: string, key: string) => {
    const imap = await authenticator.logIn({ protocol: 'imap', username, key, ip: '192.0.2.1' });
    const smtp = await authenticator.logIn({ protocol: 'smtp', username, key, ip: '192.0.2.1' });
    return imap.kind === 'loggedIn' && smtp.kind === 'loggedIn';
  };

  it('format "mobileconfig": 201 with the signed profile whose key logs in to IMAP and SMTP', async () => {
    const res = await mobile({ format: 'mobileconfig' });
    expect(res.statusCode).toBe(201);
    expect(res.headers['content-type']).toBe(MOBILECONFIG_CONTENT_TYPE);
    expect(res.headers['content-disposition']).toBe('attachment; filename="alice@example.com.mobileconfig"');
    expect(res.headers['cache-control']).toBe('no-store');
    const verified = await cmsVerify(res.rawPayload, signer.certPem);
    expect(verified.ok, verified.stderr).toBe(true);
    const mail = mailPayload(verified.content);
    expect(mail.EmailAccountName).toBe('Alice');
    expect(await logsIn(mail.IncomingMailServerUsername as string, mail.IncomingPassword as string)).toBe(true);
  });

  it('Accept: application/x-apple-aspen-config does the same; a new profile for the device replaces the old key', async () => {
    const first = await mobile({}, { accept: MOBILECONFIG_CONTENT_TYPE });
    const second = await mobile({}, { accept: MOBILECONFIG_CONTENT_TYPE });
    expect(second.headers['content-type']).toBe(MOBILECONFIG_CONTENT_TYPE);
    const oldKey = mailPayload((await cmsVerify(first.rawPayload)).content).IncomingPassword as string;
    const newKey = mailPayload((await cmsVerify(second.rawPayload)).content).IncomingPassword as string;
    expect(await logsIn('alice@example.com', oldKey)).toBe(false);
    expect(await logsIn('alice@example.com', newKey)).toBe(true);
  });

  it('setupLink: JSON with setupUrl and QR codes; the link serves the profile once', async () => {
    const res = await mobile({ setupLink: true });
    expect(res.statusCode).toBe(201);
    const body = res.json() as { apiKey: string; setupUrl: string; setupExpiresAt: string; qrSvg: string; qrPngDataUrl: string };
    expect(body.setupUrl).toMatch(/^http:\/\/kg\.example\.com\/setup\/[A-Za-z0-9_-]{43}$/);
    expect(Date.parse(body.setupExpiresAt)).toBeGreaterThan(Date.now());
    expect(body.qrSvg.trimStart()).toMatch(/^(<\?xml|<svg)/);
    expect(body.qrPngDataUrl).toMatch(/^data:image\/png;base64,iVBORw0KGgo/);

    const path = new URL(body.setupUrl).pathname;
    const served = await app.inject({ url: path });
    expect(served.statusCode).toBe(200);
    const mail = mailPayload((await cmsVerify(served.rawPayload, signer.certPem)).content);
    expect(mail.IncomingPassword).toBe(body.apiKey);
    expect(await logsIn('alice@example.com', body.apiKey)).toBe(true);
    expect((await app.inject({ url: path })).statusCode).toBe(410);
  });

  it('setupLink with qr: false leaves the QR codes out; plain JSON adds nothing', async () => {
    const noQr = (await mobile({ setupLink: true, qr: false })).json();
    expect(noQr.setupUrl).toBeDefined();
    expect(noQr.qrSvg).toBeUndefined();
    const plain = (await mobile({})).json();
    expect(Object.keys(plain).sort()).toEqual(['apiKey', 'id']);
  });

  it('refuses before creating a key when the profile cannot be built', async () => {
    const before = (await store.listKeys({ account: 'alice@example.com' })).items.length;
    const saved = signer;
    signer = { certPem: saved.certPem, keyPem: opensslSigner('rsa').keyPem };
    try {
      const res = await mobile({ format: 'mobileconfig', deviceId: 'ipad-9' });
      expect(res.statusCode).toBe(503);
      expect(res.json().error.code).toBe('setup_unavailable');
    } finally {
      signer = saved;
    }
    expect((await store.listKeys({ account: 'alice@example.com' })).items.length).toBe(before);
  });
});
