import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { Config } from '../../../config.js';
import { SAFE_TEXT_PATTERN } from '../../../keys/names.js';
import type { Action } from '../../../keys/policy.js';
import { normalizeAddress, type KeyRecord } from '../../../keys/record.js';
import {
  createCredential,
  createMobileCredential,
  listCredentials,
  PLATFORMS,
  revokeCredential,
  rotateCredential,
} from '../../../services/credentials.js';
import type { ConnectionInfo } from '../../../setup/connection.js';
import { MOBILECONFIG_CONTENT_TYPE, MobileconfigError, type ProfileSigner } from '../../../setup/mobileconfig.js';
import {
  buildMobileResponse,
  MobileSetupAdditions,
  MobileSetupFields,
  mobileSetupMode,
  preflightMobileSetup,
  requestOrigin,
  type MobileResponse,
  type MobileSetupRequest,
} from '../../../setup/mobile-response.js';
import { SetupLinkCapacityError, type SetupLinks } from '../../../setup/setup-links.js';
import { NotFoundError } from '../../../store/errors.js';
import type { KeyStore } from '../../../store/types.js';
import { HttpError } from '../../errors.js';
import { keyQuery, NamePrefixQuery, NextCursor, PageQuery, StateQuery } from '../../paging.js';
import { revokeStoredKey } from '../../../services/key-writes.js';
import {
  AUTH_ERRORS,
  CreatedCredentialKey,
  CredentialKey,
  credentialView,
  ErrorBody,
  KEY_SECURITY,
  KeyExtrasFields,
  KeyName,
  NullableInput,
  ScopeName,
} from '../../schemas.js';

/**
 * The SMTP Credentials API (reference 004), field for field. One set of
 * handlers, mounted twice:
 *  - `own`   at /api/smtp-credentials: the account is the calling key's own;
 *            an unbound key has none, so it gets 403.
 *  - `admin` at /api/accounts/{account}/smtp-credentials: the account is in
 *            the URL (administrator keys; the policy decides who may act on it).
 * Reads need `api:read`, everything else `api:write` (`app` and `*` imply both).
 */
export type CredentialsMode = 'own' | 'admin';

export interface CredentialRoutesOptions {
  store: KeyStore;
  config: Pick<Config, 'public' | 'hostname'>;
  mode: CredentialsMode;
  /** Apple profiles and one-time setup links for POST …/mobile; without it those requests get 503. */
  setup?: MobileSetupOptions;
}

export interface MobileSetupOptions {
  /** The current profile signer (asked per request: the TLS pair may be renewed); null when none is configured. */
  signer: () => ProfileSigner | null;
  links: SetupLinks | null;
  /** Public origin for setup links (config `setup.publicUrl`); default the request's scheme and Host. */
  publicUrl?: string;
}

const Address = Type.String({ format: 'email', maxLength: 254 });
const KeyId = Type.String({ minLength: 1, maxLength: 100 });
const Endpoint = Type.Object({ serverName: Type.String(), port: Type.Integer(), securePort: Type.Integer(), enabled: Type.Boolean() });
const ConnectionInfo = Type.Object({ smtp: Endpoint, pop3: Endpoint, imap: Endpoint });

const CreateBody = Type.Object(
  {
    name: KeyName,
    scopes: Type.Array(ScopeName, { minItems: 1, maxItems: 20, description: 'smtp, pop3, imap, api:read, api:write, app, internal (and *, metrics, api)' }),
    expiresAt: Type.Optional(NullableInput(Type.String({ format: 'date-time' }))),
    allowedIps: Type.Optional(NullableInput(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 100, description: 'IP addresses or CIDR ranges' }))),
    ...KeyExtrasFields,
  },
  { additionalProperties: false },
);

const MobileBody = Type.Object(
  {
    name: KeyName,
    platform: Type.Enum([...PLATFORMS]),
    deviceId: Type.String({ minLength: 1, maxLength: 200, pattern: SAFE_TEXT_PATTERN }),
    ...MobileSetupFields,
  },
  { additionalProperties: false },
);

const MobileCreated = Type.Object({ ...CreatedCredentialKey.properties, ...MobileSetupAdditions.properties });

const NO_STORE = 'no-store';

export const credentialRoutes: FastifyPluginAsyncTypebox<CredentialRoutesOptions> = async (app, { store, config, mode, setup }) => {
  const admin = mode === 'admin';
  const base = admin ? '/api/accounts/:account/smtp-credentials' : '/api/smtp-credentials';
  const who = admin ? ' of the account in the URL (administrator keys)' : ' of the calling key’s account';
  const AccountParam: Record<string, typeof Address> = admin ? { account: Address } : {};
  const BaseParams = Type.Object({ ...AccountParam });
  const KeyParams = Type.Object({ ...AccountParam, keyId: KeyId });

  /** The account acted on: the key's own, or the URL's. */
  const accountOf = (req: FastifyRequest, key: KeyRecord): string => {
    if (admin) return normalizeAddress((req.params as { account: string }).account);
    if (key.account === null) {
      throw new HttpError('forbidden', 'This key is not bound to an account; administrator keys use /api/accounts/{account}/smtp-credentials');
    }
    return key.account;
  };
  const rule =
    (access: 'read' | 'write') =>
    (req: FastifyRequest, key: KeyRecord): Action => ({ kind: 'api', access, account: accountOf(req, key) });
  const caller = (req: FastifyRequest): KeyRecord => req.principal!.key;
  const common = { tags: ['smtp-credentials'], security: KEY_SECURITY };
  const read = { auth: rule('read'), limit: 'credentials' as const };
  const write = { auth: rule('write'), limit: 'credentials' as const };

  app.get(
    base,
    {
      config: read,
      schema: {
        ...common,
        summary: admin ? `Connection info and a page of the keys${who}` : `Connection info and the active keys${who}`,
        description: admin
          ? 'Lists the account’s active keys by default (`state` picks others), newest first, a page at a time: follow `nextCursor` (as `cursor`) until it is null. ' +
            'Optional fields appear only where set. Never returns a key.'
          : 'Lists active keys only (revoked and expired keys are left out), newest first: as many as the per-account key limit allows. `expiresAt`, `lastUsedIp`, `lastUsedProtocol`, `platform` and `deviceId` appear only where set. Never returns a key.',
        params: BaseParams,
        ...(admin && { querystring: Type.Object({ ...PageQuery, state: StateQuery('active'), namePrefix: NamePrefixQuery }) }),
        response: {
          200: admin
            ? Type.Object({ connectionInfo: ConnectionInfo, keys: Type.Array(CredentialKey), nextCursor: NextCursor })
            : Type.Object({ connectionInfo: ConnectionInfo, keys: Type.Array(CredentialKey) }),
          ...(admin && { 400: ErrorBody, 404: ErrorBody }),
          ...AUTH_ERRORS,
        },
      },
    },
    async (req) => {
      const account = accountOf(req, caller(req));
      const now = new Date();
      const p = config.public;
      const connectionInfo = { smtp: p.smtp, pop3: p.pop3, imap: p.imap };
      if (!admin) return { connectionInfo, keys: (await listCredentials(store, account, now)).map((k) => credentialView(k, now)) };
      if (!(await store.getAccount(account))) throw new HttpError('not_found', 'No such account');
      const page = await store.listKeys({ ...keyQuery(req.query as Parameters<typeof keyQuery>[0]), account, now });
      return { connectionInfo, keys: page.items.map((k) => credentialView(k, now)), nextCursor: page.nextCursor };
    },
  );

  app.post(
    base,
    {
      config: write,
      schema: {
        ...common,
        summary: `Create a key${who}; the key is in this response only`,
        description: 'A key grants only what it holds: every scope of the new key, with what it implies, must be one the caller holds (403 names the first missing one); `*` only by a `*` key.',
        params: BaseParams,
        body: CreateBody,
        response: { 201: CreatedCredentialKey, 400: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req, reply) => {
      const { key, record } = await createCredential(store, caller(req), accountOf(req, caller(req)), req.body);
      return reply.code(201).header('cache-control', NO_STORE).send({ ...credentialView(record), apiKey: key });
    },
  );

  app.post(
    `${base}/mobile`,
    {
      config: write,
      schema: {
        ...common,
        summary: `Create a mail-app key (smtp, imap, pop3) for one device${who}; replaces that device's previous key`,
        description:
          'Answers JSON with the key by default. `format: "mobileconfig"` (or `Accept: application/x-apple-aspen-config`) answers with a signed Apple configuration profile ' +
          '(`application/x-apple-aspen-config`, an attachment) that sets up Mail with the new key instead. `setupLink: true` answers JSON with a one-time `setupUrl` ' +
          'that serves that profile once, for a short time, and (unless `qr: false`) its QR code as SVG and PNG. When the server cannot build or sign a profile, ' +
          'or cannot keep a link, the answer is 503 and no key is made.',
        params: BaseParams,
        body: MobileBody,
        response: {
          201: {
            description: 'The new key (JSON), or the signed profile that carries it',
            content: {
              'application/json': { schema: MobileCreated },
              [MOBILECONFIG_CONTENT_TYPE]: { schema: Type.String({ format: 'binary', description: 'Signed .mobileconfig (CMS SignedData, DER)' }) },
            },
          },
          400: ErrorBody,
          409: ErrorBody,
          503: ErrorBody,
          ...AUTH_ERRORS,
        },
      },
    },
    async (req, reply) => {
      const creator = caller(req);
      const account = accountOf(req, creator);
      const { format, setupLink, qr, ...input } = req.body;
      const request: MobileSetupRequest = { format, setupLink, qr, accept: req.headers.accept };
      const connectionInfo: ConnectionInfo = { smtp: config.public.smtp, imap: config.public.imap, pop3: config.public.pop3 };

      // Everything that can be checked before the key exists is checked now: a failure leaves no key behind.
      let signer: ProfileSigner | null = null;
      if (mobileSetupMode(request) !== 'json') {
        signer = setup?.signer() ?? null;
        if (signer === null) throw new MobileconfigError('No certificate is configured to sign Apple profiles (setup.signingCert, or the TLS certificate)');
        if (request.setupLink === true && !setup?.links) throw new HttpError('setup_unavailable', 'One-time setup links are not configured on this server');
        preflightMobileSetup({ request, connectionInfo, signer, links: setup?.links ?? null });
      }

      const { key, record } = await createMobileCredential(store, creator, account, input);
      if (signer === null) return reply.code(201).header('cache-control', NO_STORE).send({ ...credentialView(record), apiKey: key });

      let out: MobileResponse;
      try {
        const owner = await store.getAccount(account);
        out = await buildMobileResponse({
          apiKey: key,
          key: record,
          account: { address: account, displayName: owner?.displayName ?? null },
          connectionInfo,
          signer,
          request,
          links: setup?.links ?? null,
          origin: requestOrigin(req, config.hostname, setup?.publicUrl),
        });
      } catch (err) {
        // Nobody will ever see this key: take it back rather than leave a live secret no one holds.
        // (It already replaced the device's previous key; the device asks again once setup works.)
        await revokeStoredKey(store, record.id, new Date().toISOString(), 'undelivered').catch((e: unknown) => req.log.error({ err: e, keyId: record.id }, 'could not revoke an undelivered mobile key'));
        if (err instanceof MobileconfigError || err instanceof SetupLinkCapacityError || err instanceof HttpError) throw err;
        req.log.error({ err }, 'setup link store unavailable');
        throw new HttpError('setup_unavailable', 'The setup-link store is unavailable; retry later');
      }
      // The profile is raw bytes (sent as-is, no serializer); the 201 schema types the JSON answer.
      if (out.kind === 'profile') return reply.code(201).headers(out.headers).send(out.body as never);
      return reply
        .code(201)
        .header('cache-control', NO_STORE)
        .send({ ...credentialView(record), apiKey: key, ...out.additions });
    },
  );

  app.delete(
    `${base}/:keyId`,
    {
      config: write,
      schema: {
        ...common,
        summary: `Revoke a key${who}; its clients lose access at once`,
        params: KeyParams,
        response: { 204: Type.Null(), 400: ErrorBody, 404: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req, reply) => {
      await revokeCredential(store, accountOf(req, caller(req)), req.params.keyId).catch(keyNotFound);
      return reply.code(204).send(null);
    },
  );

  app.post(
    `${base}/:keyId/rotate`,
    {
      config: write,
      schema: {
        ...common,
        summary: `Rotate a key${who}: a new key with the same name and scopes, the old one revoked in the same atomic step`,
        params: KeyParams,
        response: { 200: CreatedCredentialKey, 400: ErrorBody, 404: ErrorBody, 409: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req, reply) => {
      const { key, record } = await rotateCredential(store, caller(req), accountOf(req, caller(req)), req.params.keyId).catch(keyNotFound);
      return reply.code(200).header('cache-control', NO_STORE).send({ ...credentialView(record), apiKey: key });
    },
  );
};

function keyNotFound(err: unknown): never {
  if (err instanceof NotFoundError) throw new HttpError('not_found', 'No such key');
  throw err;
}
