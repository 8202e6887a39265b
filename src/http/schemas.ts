import { Type, type Static, type TSchema } from 'typebox';
import { LOGIN_MODES, MASTER_STYLES, MAX_UPSTREAM_PASSWORD, MAX_UPSTREAM_USERNAME, TLS_MODES } from '../backends/routing.js';
import { MAX_KEY_NAME, SAFE_TEXT_PATTERN } from '../keys/names.js';
import { isActive, type AccountRecord, type KeyRecord } from '../keys/record.js';
import { SCOPE_ALIASES, SCOPES } from '../keys/scopes.js';
import { MAX_SENDING_LIMIT } from '../limits/sending-limits.js';

/** Shared response shapes. */
export const ErrorBody = Type.Object({
  error: Type.Object({ code: Type.String(), message: Type.String(), details: Type.Optional(Type.Unknown()) }),
});

export const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

const limit = (description: string) => Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_SENDING_LIMIT, description }));

/** Per-key SMTP sending limits (src/limits/sending.ts); a field left out is no limit. */
export const SendingLimitsSchema = Type.Object(
  {
    messagesPerHour: limit('Messages per clock hour (UTC); past it MAIL and DATA get 450 4.7.1'),
    recipientsPerMessage: limit('Recipients of one message; past it RCPT gets 452 4.5.3'),
    recipientsPerDay: limit('Recipients per UTC day, over all messages; past it RCPT and DATA get 450 4.7.1'),
  },
  { additionalProperties: false },
);

export const TokenView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  description: Type.String({ description: 'The same as `name`: the reference workflow\'s word for it' }),
  account: Nullable(Type.String()),
  scopes: Type.Array(Type.String()),
  createdAt: Type.String({ format: 'date-time' }),
  expiresAt: Nullable(Type.String({ format: 'date-time' })),
  allowedIps: Nullable(Type.Array(Type.String())),
  revokedAt: Nullable(Type.String({ format: 'date-time' })),
  lastUsedAt: Nullable(Type.String({ format: 'date-time' })),
  lastUsedIp: Nullable(Type.String()),
  lastUsedProtocol: Nullable(Type.String()),
  isActive: Type.Boolean(),
  canary: Type.Boolean(),
  limits: Nullable(SendingLimitsSchema),
});

export function tokenView(k: KeyRecord) {
  return {
    id: k.id,
    name: k.name,
    description: k.name,
    account: k.account,
    scopes: k.scopes,
    createdAt: k.createdAt,
    expiresAt: k.expiresAt,
    allowedIps: k.allowedIps,
    revokedAt: k.revokedAt,
    lastUsedAt: k.lastUsedAt,
    lastUsedIp: k.lastUsedIp,
    lastUsedProtocol: k.lastUsedProtocol,
    isActive: isActive(k),
    canary: k.canary === true,
    limits: k.limits ?? null,
  };
}

/** Standard error responses for authenticated routes, for OpenAPI. */
export const AUTH_ERRORS = { 401: ErrorBody, 403: ErrorBody, 429: ErrorBody } as const;

/** Security requirement for every authenticated route: Bearer header or `?access_token=`. */
export const KEY_SECURITY: { [scheme: string]: string[] }[] = [{ bearer: [] }, { access_token: [] }];

/** A key as the SMTP Credentials API shows it (reference 004); never the key itself or its hash. */
export const CredentialKey = Type.Object({
  id: Type.String(),
  name: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  lastUsedAt: Nullable(Type.String({ format: 'date-time' })),
  isActive: Type.Boolean(),
  scopes: Type.Array(Type.String()),
  expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
  lastUsedIp: Type.Optional(Type.String()),
  lastUsedProtocol: Type.Optional(Type.String()),
  platform: Type.Optional(Type.String()),
  deviceId: Type.Optional(Type.String()),
  canary: Type.Optional(Type.Literal(true)),
  limits: Type.Optional(SendingLimitsSchema),
});

/** A key just made (create, rotate, mobile): the one response that carries `apiKey`. */
export const CreatedCredentialKey = Type.Object({
  ...CredentialKey.properties,
  apiKey: Type.String({ description: 'The key. Shown in this response only; store it now.' }),
});

/** The reference's key object, with the optional fields only where set. */
export function credentialView(k: KeyRecord, now: Date = new Date()) {
  return {
    id: k.id,
    name: k.name,
    createdAt: k.createdAt,
    lastUsedAt: k.lastUsedAt,
    isActive: isActive(k, now),
    scopes: k.scopes,
    ...(k.expiresAt !== null && { expiresAt: k.expiresAt }),
    ...(k.lastUsedIp !== null && { lastUsedIp: k.lastUsedIp }),
    ...(k.lastUsedProtocol !== null && { lastUsedProtocol: k.lastUsedProtocol }),
    ...(k.platform !== null && { platform: k.platform }),
    ...(k.deviceId !== null && { deviceId: k.deviceId }),
    ...(k.canary && { canary: true as const }),
    ...(k.limits && { limits: k.limits }),
  };
}

/** An account as the API shows it. `upstream` is reserved for proxy routing and never returned. */
export const AccountView = Type.Object({
  address: Type.String(),
  displayName: Nullable(Type.String()),
  aliases: Type.Array(Type.String()),
  disabled: Type.Boolean(),
  createdAt: Type.String({ format: 'date-time' }),
});

export function accountView(a: AccountRecord) {
  return { address: a.address, displayName: a.displayName, aliases: a.aliases, disabled: a.disabled, createdAt: a.createdAt };
}

/**
 * A scope name or input alias, as request bodies accept them. Enumerations are
 * `enum`s (one error for a bad value; src/http/validation.ts words it as the CLI does).
 */
export const ScopeName = Type.Enum([...SCOPES, ...Object.keys(SCOPE_ALIASES)]);

/** A human-readable name: 1-100 characters, no control characters or bidirectional overrides (src/keys/names.ts). */
export const keyName = (description?: string) => Type.String({ minLength: 1, maxLength: MAX_KEY_NAME, pattern: SAFE_TEXT_PATTERN, ...(description !== undefined && { description }) });
export const KeyName = keyName();

/**
 * What an account's route says about one protocol: any subset of the fields,
 * laid over the domain's route and the default (`upstream.<protocol>.*`).
 * Login modes `lmtp` and `none` are for SMTP only (refused for IMAP and POP3 with a 400).
 */
export const UpstreamOverlay = Type.Object(
  {
    host: Type.Optional(Type.String({ minLength: 1, maxLength: 253, pattern: '^[^\\s/]+$' })),
    port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535, description: '0 = the usual port for the protocol and TLS mode' })),
    tls: Type.Optional(Type.Enum([...TLS_MODES])),
    verifyCert: Type.Optional(Type.Boolean({ description: "Check the upstream's certificate chain and name" })),
    trusted: Type.Optional(Type.Boolean({ description: 'The upstream trusts Keygate to report the client address (IMAP ID, SMTP XCLIENT)' })),
    login: Type.Optional(Type.Enum([...LOGIN_MODES.smtp], { description: 'master: the master user acting for the account; account: the stored user name and password' })),
    masterStyle: Type.Optional(Type.Enum([...MASTER_STYLES])),
    xclient: Type.Optional(Type.Boolean({ description: 'SMTP only: send Postfix XCLIENT (needs trusted)' })),
  },
  { additionalProperties: false },
);

/**
 * A request field that may be null, written as OpenAPI 3.0 does (`nullable: true`),
 * not as a union: with type coercion on (form posts need it), ajv tries a union's
 * branches in turn and turns a JSON null into `""` or `[""]` for the first one, so
 * `"allowedIps": null` was refused as a bad address. Here null stays null, and
 * "" (refused where the schema refuses it) stays apart from it.
 */
export const NullableInput = <T extends TSchema>(schema: T) => Type.Unsafe<Static<T> | null>({ ...schema, nullable: true });

const NullableString = (options: { maxLength: number; pattern?: string; description?: string }) => NullableInput(Type.String(options));

/** PUT body: the account's whole route (it replaces the stored one), except that an absent `password` keeps the stored one. */
export const AccountUpstreamBody = Type.Object(
  {
    imap: Type.Optional(UpstreamOverlay),
    pop3: Type.Optional(UpstreamOverlay),
    smtp: Type.Optional(UpstreamOverlay),
    username: Type.Optional(NullableString({ maxLength: MAX_UPSTREAM_USERNAME, pattern: '^[^\\u0000-\\u001f\\u007f]*$', description: 'Upstream user name; null = the account address' })),
    password: Type.Optional(
      NullableString({
        maxLength: MAX_UPSTREAM_PASSWORD,
        description: 'Upstream password for login mode "account", in plain text; stored sealed under KEYGATE_SECRET and never returned. Absent = keep the stored one; null = remove it.',
      }),
    ),
  },
  { additionalProperties: false },
);

/**
 * An account's route as the API shows it: never the password, only whether one
 * is set. `route` is null when the account has no route of its own (it follows
 * its domain's route, `upstream.domains`, or the default).
 */
export const AccountUpstreamView = Type.Object({
  account: Type.String(),
  route: Nullable(
    Type.Object(
      {
        imap: Type.Optional(UpstreamOverlay),
        pop3: Type.Optional(UpstreamOverlay),
        smtp: Type.Optional(UpstreamOverlay),
        username: Nullable(Type.String({ description: 'null = the account address' })),
        passwordSet: Type.Boolean({ description: 'An upstream password is stored (sealed; never returned)' }),
      },
      { additionalProperties: false },
    ),
  ),
});

/** What a key-creating request body may add: a canary, and sending limits. */
export const KeyExtrasFields = {
  canary: Type.Optional(Type.Boolean({ description: 'A canary: looks like any key but grants nothing; every use is refused like a wrong key and raised as key.canary_used' })),
  limits: Type.Optional(NullableInput(SendingLimitsSchema)),
};
