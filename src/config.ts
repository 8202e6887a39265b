import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import type { UpstreamServer } from './backends/routing.js';
import { validateUpstreamConfig } from './backends/routing.js';
import { parseDuration } from './duration.js';
import type { Protocol } from './keys/scopes.js';
import { ACME_DIRECTORY_NAMES, acmeProblem } from './tls/acme-settings.js';
import { configuredEndpointsProblem } from './events/endpoints.js';
import { parseJson } from './json-text.js';

/**
 * The one configuration module. Precedence: defaults < config file (JSON,
 * `--config`) < environment (`KEYGATE_*`) < command-line flags (dotted, e.g.
 * `--dbs.redis`). Every leaf has a spec below; an invalid value stops start-up
 * with a ConfigError naming the setting.
 */
export interface ListenerConfig {
  enabled: boolean;
  host: string;
  /** STARTTLS / STLS port. */
  port: number;
  /** Implicit-TLS port. */
  securePort: number;
}

export interface PublicEndpoint {
  serverName: string;
  port: number;
  securePort: number;
  enabled: boolean;
}

/** The default upstream for one protocol (proxy backends); an empty host = no backend for it. */
export type UpstreamSettings = Omit<UpstreamServer, 'xclient' | 'socket'>;

export interface Config {
  /** Base directory of relative paths (store, certificates, `keygate.json`); empty = the current directory. */
  home: string;
  db: { path: string };
  dbs: { redis: string };
  preparedToken: string;
  hostname: string;
  secret: string;
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  http: {
    host: string;
    port: number;
    bodyLimit: number;
    trustProxy: boolean;
    /** Serve the control plane over HTTPS with the mail certificates (and HSTS). */
    tls: boolean;
    /** Open connections at most; at the cap the longest-idle one is closed for a new one. */
    maxConnections: number;
    /** From connection (or the previous response) to a request's complete headers. */
    headersTimeout: number;
    /** A kept-alive connection waiting for its next request. */
    idleTimeout: number;
    /** One whole request, body included. */
    requestTimeout: number;
  };
  rateLimit: {
    credentials: { max: number; window: number };
    api: { max: number; window: number };
  };
  public: { smtp: PublicEndpoint; imap: PublicEndpoint; pop3: PublicEndpoint };
  smtp: ListenerConfig;
  imap: ListenerConfig;
  pop3: ListenerConfig;
  /** Dovecot-protocol SASL server for Postfix and Exim: TCP when port is set, a unix socket when socket is set; neither by default. */
  saslServer: { host: string; port: number; socket: string };
  tls: {
    /** Comma-separated PEM chain files; `key` lists their keys in the same order. */
    cert: string;
    key: string;
    dir: string;
    handshakeTimeout: number;
    /** ms: how long one shared session-ticket key is used. */
    ticketKeyRotation: number;
    acme: AcmeConfig;
  };
  auth: {
    allowPlaintext: boolean;
    failureDelay: number;
    ipFailures: number;
    accountFailures: number;
    failureWindow: number;
  };
  limits: {
    lineLength: number;
    literalSize: number;
    commandsBeforeLogin: number;
    connectionsPerIp: number;
    connectionsPerListener: number;
    loginTimeout: number;
    messageSize: number;
    /** Most active keys one account may hold; every key-creating write is refused past it (409). */
    keysPerAccount: number;
  };
  sessions: { recheckInterval: number };
  proxyProtocol: boolean;
  shutdownGrace: number;
  touchInterval: number;
  upstream: {
    imap: UpstreamSettings;
    pop3: UpstreamSettings;
    smtp: UpstreamSettings & { xclient: boolean; maxConnections: number; timeout: number };
    master: { user: string; password: string; separator: string };
    /** JSON object: domain → { imap?, pop3?, smtp?, master? } (see src/backends/routing.ts). */
    domains: string;
    connectTimeout: number;
    loginTimeout: number;
  };
  nginx: { authSecret: string };
  /** `local`: run a private Dovecot as the default IMAP/POP3 upstream and deliver to local accounts over LMTP (src/mailbox/); `none`: proxy only. */
  mailbox: 'none' | 'local';
  /** The local mailbox's directory: Dovecot's generated configuration, sockets and every account's Maildir. */
  mailboxDir: string;
  /** The `dovecot` program the local mailbox runs (a path, or a name looked up in PATH and the sbin directories). */
  mailboxDovecot: string;
  /** Leaked-key reports (`POST /api/leaks`): who may send them. Both empty = the endpoint refuses every report. */
  leaks: {
    /** GitHub's secret-scanning public keys: a file in the format of https://api.github.com/meta/public_keys/secret_scanning. */
    githubKeys: string;
    /** Shared secret of other scanners: HMAC-SHA256 of the body, hex, in `Keygate-Signature: sha256=…`. */
    hmacSecret: string;
  };
  setup: {
    /** Lifetime of a one-time setup link, ms. */
    linkTtl: number;
    /** PEM certificate (chain) and key that sign Apple profiles; empty = the TLS pair. */
    signingCert: string;
    signingKey: string;
    /** Public origin of the control plane for setup links and QR codes; empty = the request's scheme and Host. */
    publicUrl: string;
  };
  console: {
    /** Serve the web console at / (the REST API stays either way). */
    enabled: boolean;
    /** A console session ends after this long without a request, ms. */
    idleTimeout: number;
    /** …and this long after sign-in whatever happens, ms. */
    absoluteTimeout: number;
    /** Lifetime of a one-time sign-in link an administrator makes, ms. */
    linkTtl: number;
    /** OpenID Connect sign-in: issuer URL, client id and secret; empty issuer = off. */
    oidc: { issuer: string; clientId: string; clientSecret: string };
  };
  /** Login history and the key events (issue 15). */
  events: {
    /** Record every login attempt in the store. */
    history: boolean;
    historyRetention: number;
    historyMax: number;
    /** Prefix lengths that make a network for `key.new_network`. */
    newNetworkV4Prefix: number;
    newNetworkV6Prefix: number;
    /** `key.expiring` this long before a key's expiry, ms. */
    expiringBefore: number;
    /** How often keys are checked for `key.expiring` / `key.expired`, ms. */
    expiryScanInterval: number;
    /** `login.failures` when an account has this many failed logins within `failureWindow`; 0 = never. */
    failureThreshold: number;
    failureWindow: number;
  };
  webhooks: {
    /** JSON array of {url, secret, events?}: endpoints besides those registered with POST /api/webhooks. */
    endpoints: string;
    timeout: number;
    /** Delay before the first retry; doubled each time up to `maxBackoff`. */
    backoff: number;
    maxBackoff: number;
    maxAttempts: number;
    /** How often the queue is checked for due deliveries, ms. */
    pollInterval: number;
  };
}

export interface AcmeConfig {
  /** Directory URL or a known CA's name (src/tls/acme-settings.ts); empty = no ACME. */
  directory: string;
  email: string;
  /** Comma-separated names besides `hostname`. */
  names: string;
  challenge: string;
  /** PEM file of a private CA for the directory's HTTPS. */
  directoryCa: string;
  eabKid: string;
  eabHmacKey: string;
}

type Kind = 'string' | 'int' | 'port' | 'bool' | 'duration' | 'level';

export interface Spec {
  kind: Kind;
  env: string;
  doc: string;
  /** A secret: from the environment or the config file only, never a command-line flag (other users see argv in ps). */
  secret?: true;
  /** Set nowhere, it takes this other setting's value (what clients are told follows what Keygate does). */
  follows?: string;
  /** A file or directory: relative to `home` when that is set. */
  path?: true;
  /** With `path`: a comma-separated list of them. */
  list?: true;
  /** Holds credentials inside a larger value: `url` (user:password@), `json` (any "password" field). Masked when shown. */
  embeds?: 'url' | 'json';
}

/**
 * Bounds of limits.keysPerAccount: what walks one account's keys (its own
 * list, device replacement, deleting it) reads at most this many.
 */
const MIN_KEYS_PER_ACCOUNT = 1;
const MAX_KEYS_PER_ACCOUNT = 1000;

/** May an error message quote this setting's value? Never for one that is or may hold a secret. */
function echoable(spec: Spec): boolean {
  return !spec.secret && spec.embeds === undefined;
}

/** The config file read from `home` when no --config file is given. */
export const CONFIG_FILE_NAME = 'keygate.json';

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export const DEFAULTS: Config = {
  home: '',
  db: { path: 'data/keygate.db' },
  dbs: { redis: '' },
  preparedToken: '',
  hostname: 'localhost',
  secret: '',
  log: { level: 'info' },
  http: { host: '127.0.0.1', port: 8080, bodyLimit: 64 * 1024, trustProxy: false, tls: false, maxConnections: 1000, headersTimeout: 10_000, idleTimeout: 5_000, requestTimeout: 30_000 },
  rateLimit: {
    credentials: { max: 30, window: 60_000 },
    api: { max: 600, window: 60_000 },
  },
  public: {
    smtp: { serverName: '', port: 2587, securePort: 2465, enabled: true },
    imap: { serverName: '', port: 2143, securePort: 2993, enabled: true },
    pop3: { serverName: '', port: 2110, securePort: 2995, enabled: true },
  },
  smtp: { enabled: true, host: '127.0.0.1', port: 2587, securePort: 2465 },
  imap: { enabled: true, host: '127.0.0.1', port: 2143, securePort: 2993 },
  pop3: { enabled: true, host: '127.0.0.1', port: 2110, securePort: 2995 },
  saslServer: { host: '127.0.0.1', port: 0, socket: '' },
  tls: {
    cert: '',
    key: '',
    dir: 'certs',
    handshakeTimeout: 5000,
    ticketKeyRotation: 12 * 60 * 60_000,
    acme: { directory: '', email: '', names: '', challenge: 'http-01', directoryCa: '', eabKid: '', eabHmacKey: '' },
  },
  auth: { allowPlaintext: false, failureDelay: 1000, ipFailures: 30, accountFailures: 10, failureWindow: 15 * 60_000 },
  limits: {
    lineLength: 8192,
    literalSize: 8192,
    commandsBeforeLogin: 20,
    connectionsPerIp: 50,
    connectionsPerListener: 1000,
    loginTimeout: 60_000,
    messageSize: 35 * 1024 * 1024,
    keysPerAccount: 100,
  },
  sessions: { recheckInterval: 30_000 },
  proxyProtocol: false,
  shutdownGrace: 10_000,
  touchInterval: 1000,
  upstream: {
    imap: { host: '', port: 0, tls: 'starttls', verifyCert: true, trusted: false, login: 'master', masterStyle: 'separator' },
    pop3: { host: '', port: 0, tls: 'starttls', verifyCert: true, trusted: false, login: 'master', masterStyle: 'separator' },
    smtp: {
      host: '',
      port: 0,
      tls: 'starttls',
      verifyCert: true,
      trusted: false,
      login: 'master',
      masterStyle: 'separator',
      xclient: false,
      maxConnections: 5,
      timeout: 120_000,
    },
    master: { user: '', password: '', separator: '*' },
    domains: '',
    connectTimeout: 10_000,
    loginTimeout: 15_000,
  },
  nginx: { authSecret: '' },
  mailbox: 'none',
  mailboxDir: 'data/mailbox',
  mailboxDovecot: 'dovecot',
  leaks: { githubKeys: '', hmacSecret: '' },
  setup: { linkTtl: 10 * 60_000, signingCert: '', signingKey: '', publicUrl: '' },
  console: {
    enabled: true,
    idleTimeout: 30 * 60_000,
    absoluteTimeout: 12 * 60 * 60_000,
    linkTtl: 15 * 60_000,
    oidc: { issuer: '', clientId: '', clientSecret: '' },
  },
  events: {
    history: true,
    historyRetention: 30 * 24 * 60 * 60_000,
    historyMax: 10_000,
    newNetworkV4Prefix: 24,
    newNetworkV6Prefix: 48,
    expiringBefore: 7 * 24 * 60 * 60_000,
    expiryScanInterval: 60 * 60_000,
    failureThreshold: 10,
    failureWindow: 15 * 60_000,
  },
  webhooks: { endpoints: '', timeout: 10_000, backoff: 10_000, maxBackoff: 60 * 60_000, maxAttempts: 15, pollInterval: 1000 },
};

function listener(name: string, port: number, securePort: number): Record<string, Spec> {
  const up = name.toUpperCase();
  return {
    [`${name}.enabled`]: { kind: 'bool', env: `KEYGATE_${up}_ENABLED`, doc: `run the ${up} listeners` },
    [`${name}.host`]: { kind: 'string', env: `KEYGATE_${up}_HOST`, doc: `${up} bind address` },
    [`${name}.port`]: { kind: 'port', env: `KEYGATE_${up}_PORT`, doc: `${up} STARTTLS port (dev ${port})` },
    [`${name}.securePort`]: { kind: 'port', env: `KEYGATE_${up}_SECURE_PORT`, doc: `${up} implicit-TLS port (dev ${securePort})` },
  };
}

/** What clients are told (autoconfig, Autodiscover, profiles, connectionInfo): the listener's own values unless set. */
function publicEndpoint(name: string): Record<string, Spec> {
  const up = name.toUpperCase();
  return {
    [`public.${name}.serverName`]: { kind: 'string', env: `KEYGATE_PUBLIC_${up}_HOST`, doc: `${up} host name clients should use`, follows: 'hostname' },
    [`public.${name}.port`]: { kind: 'port', env: `KEYGATE_PUBLIC_${up}_PORT`, doc: `${up} STARTTLS port clients should use (behind NAT or a proxy)`, follows: `${name}.port` },
    [`public.${name}.securePort`]: { kind: 'port', env: `KEYGATE_PUBLIC_${up}_SECURE_PORT`, doc: `${up} implicit-TLS port clients should use (behind NAT or a proxy)`, follows: `${name}.securePort` },
    [`public.${name}.enabled`]: { kind: 'bool', env: `KEYGATE_PUBLIC_${up}_ENABLED`, doc: `advertise ${up} to clients`, follows: `${name}.enabled` },
  };
}

function upstreamSpecs(name: Protocol): Record<string, Spec> {
  const up = name.toUpperCase();
  const logins = name === 'smtp' ? 'master, account, lmtp (deliver over LMTP), none (relay without login)' : 'master, account';
  return {
    [`upstream.${name}.host`]: { kind: 'string', env: `KEYGATE_UPSTREAM_${up}_HOST`, doc: `default upstream ${up} server; empty = no ${up} backend` },
    [`upstream.${name}.port`]: { kind: 'port', env: `KEYGATE_UPSTREAM_${up}_PORT`, doc: `default upstream ${up} port; 0 = usual port for the TLS mode` },
    [`upstream.${name}.tls`]: { kind: 'string', env: `KEYGATE_UPSTREAM_${up}_TLS`, doc: `TLS to the upstream ${up} server: implicit, starttls or none` },
    [`upstream.${name}.verifyCert`]: { kind: 'bool', env: `KEYGATE_UPSTREAM_${up}_VERIFY_CERT`, doc: `check the upstream ${up} certificate` },
    [`upstream.${name}.trusted`]: { kind: 'bool', env: `KEYGATE_UPSTREAM_${up}_TRUSTED`, doc: name === 'imap' ? 'upstream trusts Keygate: send ID x-originating-ip/port before login' : `upstream ${up} trusts Keygate to report the client` },
    [`upstream.${name}.login`]: { kind: 'string', env: `KEYGATE_UPSTREAM_${up}_LOGIN`, doc: `how Keygate logs in upstream: ${logins}` },
    [`upstream.${name}.masterStyle`]: { kind: 'string', env: `KEYGATE_UPSTREAM_${up}_MASTER_STYLE`, doc: 'master login form: separator (user*master) or authzid (SASL PLAIN authzid=user)' },
  };
}

export const SPECS: Record<string, Spec> = {
  home: { kind: 'string', env: 'KEYGATE_HOME', doc: `directory of the store, the certificates and ${CONFIG_FILE_NAME} (read unless --config is given): relative paths in settings start there, so every command finds the same store (a relative path given as a flag is from the current directory); empty = the current directory` },
  'db.path': { kind: 'string', env: 'KEYGATE_DB_PATH', doc: 'SQLite database file (used when dbs.redis is empty)', path: true },
  'dbs.redis': { kind: 'string', env: 'KEYGATE_REDIS_URL', doc: 'Redis URL: redis://, rediss://, redis-sentinel://h:p,h:p/master, redis-cluster://h:p,h:p', embeds: 'url' },
  preparedToken: { kind: 'string', env: 'KEYGATE_PREPARED_TOKEN', doc: 'exported token blob(s), comma or space separated, imported at start-up' },
  hostname: { kind: 'string', env: 'KEYGATE_HOSTNAME', doc: 'public host name: greetings, certificate SAN, client setup' },
  secret: { kind: 'string', env: 'KEYGATE_SECRET', doc: 'encryption secret for stored upstream credentials', secret: true },
  'log.level': { kind: 'level', env: 'KEYGATE_LOG_LEVEL', doc: `log level: ${LEVELS.join(', ')}` },
  'http.host': { kind: 'string', env: 'KEYGATE_HTTP_HOST', doc: 'control-plane bind address' },
  'http.port': { kind: 'port', env: 'KEYGATE_HTTP_PORT', doc: 'control-plane port' },
  'http.bodyLimit': { kind: 'int', env: 'KEYGATE_HTTP_BODY_LIMIT', doc: 'largest accepted request body, bytes' },
  'http.trustProxy': { kind: 'bool', env: 'KEYGATE_HTTP_TRUST_PROXY', doc: 'take the client IP from X-Forwarded-For' },
  'http.tls': { kind: 'bool', env: 'KEYGATE_HTTP_TLS', doc: 'serve the control plane over HTTPS with the mail certificates (and HSTS)' },
  'http.maxConnections': { kind: 'int', env: 'KEYGATE_HTTP_MAX_CONNECTIONS', doc: 'open control-plane connections at most; at the cap the longest-idle one is closed first' },
  'http.headersTimeout': { kind: 'duration', env: 'KEYGATE_HTTP_HEADERS_TIMEOUT', doc: 'time allowed for a request\'s headers, from connect or the previous response' },
  'http.idleTimeout': { kind: 'duration', env: 'KEYGATE_HTTP_IDLE_TIMEOUT', doc: 'how long a kept-alive control-plane connection may wait for its next request' },
  'http.requestTimeout': { kind: 'duration', env: 'KEYGATE_HTTP_REQUEST_TIMEOUT', doc: 'time allowed for one whole request, body included' },
  'rateLimit.credentials.max': { kind: 'int', env: 'KEYGATE_RATE_LIMIT_CREDENTIALS_MAX', doc: 'requests per window to /api/smtp-credentials routes, per key and per IP' },
  'rateLimit.credentials.window': { kind: 'duration', env: 'KEYGATE_RATE_LIMIT_CREDENTIALS_WINDOW', doc: 'window for the credentials limit' },
  'rateLimit.api.max': { kind: 'int', env: 'KEYGATE_RATE_LIMIT_API_MAX', doc: 'requests per window to other API routes, per IP' },
  'rateLimit.api.window': { kind: 'duration', env: 'KEYGATE_RATE_LIMIT_API_WINDOW', doc: 'window for the API limit' },
  ...publicEndpoint('smtp'),
  ...publicEndpoint('imap'),
  ...publicEndpoint('pop3'),
  ...listener('smtp', 2587, 2465),
  ...listener('imap', 2143, 2993),
  ...listener('pop3', 2110, 2995),
  'saslServer.host': { kind: 'string', env: 'KEYGATE_SASL_SERVER_HOST', doc: 'SASL server (Dovecot auth protocol, for Postfix and Exim) bind address; keep it on loopback' },
  'saslServer.port': { kind: 'port', env: 'KEYGATE_SASL_SERVER_PORT', doc: 'SASL server TCP port (Postfix: smtpd_sasl_path = inet:127.0.0.1:PORT); 0 = off' },
  'saslServer.socket': { kind: 'string', env: 'KEYGATE_SASL_SERVER_SOCKET', doc: 'SASL server unix socket path (Exim server_socket, Postfix private/…); empty = off', path: true },
  'tls.cert': {
    kind: 'string',
    env: 'KEYGATE_TLS_CERT',
    doc: 'PEM certificate chain file(s), comma separated: RSA and ECDSA side by side, other host names by SNI (re-read when changed); empty = self-signed in tls.dir',
    path: true,
    list: true,
  },
  'tls.key': { kind: 'string', env: 'KEYGATE_TLS_KEY', doc: 'PEM private key file(s), in the order of tls.cert', path: true, list: true },
  'tls.dir': { kind: 'string', env: 'KEYGATE_TLS_DIR', doc: 'where the self-signed certificate is made', path: true },
  'tls.handshakeTimeout': { kind: 'duration', env: 'KEYGATE_TLS_HANDSHAKE_TIMEOUT', doc: 'time a client has to finish a TLS handshake (implicit TLS, STARTTLS, STLS)' },
  'tls.ticketKeyRotation': { kind: 'duration', env: 'KEYGATE_TLS_TICKET_KEY_ROTATION', doc: 'lifetime of the TLS session-ticket key shared by all instances (1m to 7d)' },
  'tls.acme.directory': {
    kind: 'string',
    env: 'KEYGATE_ACME_DIRECTORY',
    doc: `ACME directory URL or ${ACME_DIRECTORY_NAMES.join(', ')}: certificates for hostname and tls.acme.names (setting it agrees to that CA's terms); empty = off`,
  },
  'tls.acme.email': { kind: 'string', env: 'KEYGATE_ACME_EMAIL', doc: 'contact address for the ACME account' },
  'tls.acme.names': { kind: 'string', env: 'KEYGATE_ACME_NAMES', doc: 'more host names for the ACME certificate, comma separated' },
  'tls.acme.challenge': {
    kind: 'string',
    env: 'KEYGATE_ACME_CHALLENGE',
    doc: 'http-01 (the CA asks the control plane, on port 80) or tls-alpn-01 (the CA connects to port 443: implicit-TLS listeners and the HTTPS control plane)',
  },
  'tls.acme.directoryCa': { kind: 'string', env: 'KEYGATE_ACME_DIRECTORY_CA', doc: "PEM file of a private CA that signs the ACME directory's HTTPS certificate", path: true },
  'tls.acme.eabKid': { kind: 'string', env: 'KEYGATE_ACME_EAB_KID', doc: 'ACME external account binding key id (ZeroSSL, company CAs)' },
  'tls.acme.eabHmacKey': { kind: 'string', env: 'KEYGATE_ACME_EAB_HMAC_KEY', doc: 'ACME external account binding HMAC key (base64url)', secret: true },
  'auth.allowPlaintext': { kind: 'bool', env: 'KEYGATE_AUTH_ALLOW_PLAINTEXT', doc: 'allow password login before TLS from non-loopback clients' },
  'auth.failureDelay': { kind: 'duration', env: 'KEYGATE_AUTH_FAILURE_DELAY', doc: 'delay before every failed-login reply' },
  'auth.ipFailures': { kind: 'int', env: 'KEYGATE_AUTH_IP_FAILURES', doc: 'failed logins per client IP per window before temporary refusal' },
  'auth.accountFailures': { kind: 'int', env: 'KEYGATE_AUTH_ACCOUNT_FAILURES', doc: 'failed logins per account and presented key per window' },
  'auth.failureWindow': { kind: 'duration', env: 'KEYGATE_AUTH_FAILURE_WINDOW', doc: 'window for failed-login counting' },
  'limits.lineLength': { kind: 'int', env: 'KEYGATE_LIMITS_LINE_LENGTH', doc: 'longest protocol line before login, bytes' },
  'limits.literalSize': { kind: 'int', env: 'KEYGATE_LIMITS_LITERAL_SIZE', doc: 'largest IMAP literal before login, bytes' },
  'limits.commandsBeforeLogin': { kind: 'int', env: 'KEYGATE_LIMITS_COMMANDS_BEFORE_LOGIN', doc: 'commands allowed before a successful login' },
  'limits.connectionsPerIp': { kind: 'int', env: 'KEYGATE_LIMITS_CONNECTIONS_PER_IP', doc: 'open connections per client IP (IPv6: per /64), per listener; 0 = no limit' },
  'limits.connectionsPerListener': { kind: 'int', env: 'KEYGATE_LIMITS_CONNECTIONS_PER_LISTENER', doc: 'open connections per listener; when full, the oldest not yet logged in is closed; 0 = no limit' },
  'limits.loginTimeout': { kind: 'duration', env: 'KEYGATE_LIMITS_LOGIN_TIMEOUT', doc: 'time allowed from connect to login' },
  'limits.messageSize': { kind: 'int', env: 'KEYGATE_LIMITS_MESSAGE_SIZE', doc: 'largest SMTP message, bytes' },
  'limits.keysPerAccount': {
    kind: 'int',
    env: 'KEYGATE_LIMITS_KEYS_PER_ACCOUNT',
    doc: `most active keys one account may hold, ${MIN_KEYS_PER_ACCOUNT}-${MAX_KEYS_PER_ACCOUNT}; creating more is refused (409)`,
  },
  'sessions.recheckInterval': { kind: 'duration', env: 'KEYGATE_SESSIONS_RECHECK_INTERVAL', doc: 'how often open sessions are checked against the store for revoked keys and disabled accounts' },
  proxyProtocol: { kind: 'bool', env: 'KEYGATE_PROXY_PROTOCOL', doc: 'expect a PROXY protocol v1/v2 header on mail listeners' },
  shutdownGrace: { kind: 'duration', env: 'KEYGATE_SHUTDOWN_GRACE', doc: 'how long open sessions may finish after SIGTERM' },
  touchInterval: { kind: 'duration', env: 'KEYGATE_TOUCH_INTERVAL', doc: 'how often coalesced last-use writes are flushed' },
  ...upstreamSpecs('imap'),
  ...upstreamSpecs('pop3'),
  ...upstreamSpecs('smtp'),
  'upstream.smtp.xclient': { kind: 'bool', env: 'KEYGATE_UPSTREAM_SMTP_XCLIENT', doc: 'send Postfix XCLIENT (client address, login) to a trusted SMTP upstream' },
  'upstream.smtp.maxConnections': { kind: 'int', env: 'KEYGATE_UPSTREAM_SMTP_MAX_CONNECTIONS', doc: 'pooled connections per SMTP upstream and login' },
  'upstream.smtp.timeout': { kind: 'duration', env: 'KEYGATE_UPSTREAM_SMTP_TIMEOUT', doc: 'inactivity timeout while relaying a message upstream' },
  'upstream.master.user': { kind: 'string', env: 'KEYGATE_UPSTREAM_MASTER_USER', doc: 'upstream master user (login mode master)' },
  'upstream.master.password': { kind: 'string', env: 'KEYGATE_UPSTREAM_MASTER_PASSWORD', doc: 'upstream master user password', secret: true },
  'upstream.master.separator': { kind: 'string', env: 'KEYGATE_UPSTREAM_MASTER_SEPARATOR', doc: 'separator of user and master in the separator style (Dovecot auth_master_user_separator)' },
  'upstream.domains': { kind: 'string', env: 'KEYGATE_UPSTREAM_DOMAINS', doc: 'per-domain routes, JSON: {"example.com": {"imap": {"host": …}, "smtp": {…}, "master": {…}}}', embeds: 'json' },
  'upstream.connectTimeout': { kind: 'duration', env: 'KEYGATE_UPSTREAM_CONNECT_TIMEOUT', doc: 'time allowed to connect to an upstream (TCP and TLS)' },
  'upstream.loginTimeout': { kind: 'duration', env: 'KEYGATE_UPSTREAM_LOGIN_TIMEOUT', doc: 'time allowed from upstream greeting to logged in' },
  mailbox: { kind: 'string', env: 'KEYGATE_MAILBOX', doc: 'local = a mailbox of your own: Keygate runs a private Dovecot (apt: dovecot-imapd dovecot-pop3d dovecot-lmtpd) as the default IMAP and POP3 upstream and delivers to its accounts over LMTP; none = only proxy to upstream.*' },
  mailboxDir: { kind: 'string', env: 'KEYGATE_MAILBOX_DIR', doc: 'directory of the local mailbox: generated Dovecot configuration, sockets, one Maildir per account', path: true },
  mailboxDovecot: { kind: 'string', env: 'KEYGATE_MAILBOX_DOVECOT', doc: 'the dovecot program the local mailbox runs: a path, or a name looked up in PATH, /usr/sbin and /usr/local/sbin' },
  'setup.linkTtl': { kind: 'duration', env: 'KEYGATE_SETUP_LINK_TTL', doc: 'how long a one-time setup link (Apple profile, QR code) stays usable; at most 24h' },
  'setup.signingCert': { kind: 'string', env: 'KEYGATE_SETUP_SIGNING_CERT', doc: 'PEM certificate chain file that signs Apple profiles; empty = the TLS certificate', path: true },
  'setup.signingKey': { kind: 'string', env: 'KEYGATE_SETUP_SIGNING_KEY', doc: 'PEM private key file of setup.signingCert', path: true },
  'setup.publicUrl': { kind: 'string', env: 'KEYGATE_PUBLIC_URL', doc: 'public URL of the control plane for setup links, e.g. https://keygate.example.com; empty = the request\'s scheme and Host' },
  'console.enabled': { kind: 'bool', env: 'KEYGATE_CONSOLE_ENABLED', doc: 'serve the web console at /' },
  'console.idleTimeout': { kind: 'duration', env: 'KEYGATE_CONSOLE_IDLE_TIMEOUT', doc: 'a console session ends after this long without a request' },
  'console.absoluteTimeout': { kind: 'duration', env: 'KEYGATE_CONSOLE_ABSOLUTE_TIMEOUT', doc: 'a console session ends this long after sign-in' },
  'console.linkTtl': { kind: 'duration', env: 'KEYGATE_CONSOLE_LINK_TTL', doc: 'how long a one-time console sign-in link stays usable; at most 24h' },
  'console.oidc.issuer': { kind: 'string', env: 'KEYGATE_CONSOLE_OIDC_ISSUER', doc: 'OpenID Connect issuer URL for console sign-in; empty = off' },
  'console.oidc.clientId': { kind: 'string', env: 'KEYGATE_CONSOLE_OIDC_CLIENT_ID', doc: 'OpenID Connect client id' },
  'console.oidc.clientSecret': { kind: 'string', env: 'KEYGATE_CONSOLE_OIDC_CLIENT_SECRET', doc: 'OpenID Connect client secret', secret: true },
  'leaks.githubKeys': {
    kind: 'string',
    env: 'KEYGATE_LEAKS_GITHUB_KEYS',
    doc: "file holding GitHub's secret-scanning public keys (the JSON of api.github.com/meta/public_keys/secret_scanning; re-read when changed); empty = GitHub reports refused",
    path: true,
  },
  'leaks.hmacSecret': { kind: 'string', env: 'KEYGATE_LEAKS_HMAC_SECRET', doc: 'shared secret other secret scanners sign POST /api/leaks with (Keygate-Signature: sha256=HMAC hex); empty = refused', secret: true },
  'events.history': { kind: 'bool', env: 'KEYGATE_EVENTS_HISTORY', doc: 'record every login attempt (time, account, key id, protocol, client IP, result, client name) in the store' },
  'events.historyRetention': { kind: 'duration', env: 'KEYGATE_EVENTS_HISTORY_RETENTION', doc: 'how long login history is kept' },
  'events.historyMax': { kind: 'int', env: 'KEYGATE_EVENTS_HISTORY_MAX', doc: 'login history entries kept per account at most (1-10000)' },
  'events.newNetworkV4Prefix': { kind: 'int', env: 'KEYGATE_EVENTS_NEW_NETWORK_V4_PREFIX', doc: 'IPv4 prefix length of a network for key.new_network (8-32)' },
  'events.newNetworkV6Prefix': { kind: 'int', env: 'KEYGATE_EVENTS_NEW_NETWORK_V6_PREFIX', doc: 'IPv6 prefix length of a network for key.new_network (16-128)' },
  'events.expiringBefore': { kind: 'duration', env: 'KEYGATE_EVENTS_EXPIRING_BEFORE', doc: 'raise key.expiring this long before a key expires' },
  'events.expiryScanInterval': { kind: 'duration', env: 'KEYGATE_EVENTS_EXPIRY_SCAN_INTERVAL', doc: 'how often keys are checked for key.expiring and key.expired' },
  'events.failureThreshold': { kind: 'int', env: 'KEYGATE_EVENTS_FAILURE_THRESHOLD', doc: 'raise login.failures when an account has this many failed logins within events.failureWindow; 0 = never' },
  'events.failureWindow': { kind: 'duration', env: 'KEYGATE_EVENTS_FAILURE_WINDOW', doc: 'window for events.failureThreshold' },
  'webhooks.endpoints': {
    kind: 'string',
    env: 'KEYGATE_WEBHOOKS',
    doc: 'webhook endpoints, JSON: [{"url": "https://…", "secret": "…", "events": ["key.revoked", …]}] (events omitted = all)',
    secret: true,
    embeds: 'json',
  },
  'webhooks.timeout': { kind: 'duration', env: 'KEYGATE_WEBHOOKS_TIMEOUT', doc: 'time a receiver has to answer one delivery' },
  'webhooks.backoff': { kind: 'duration', env: 'KEYGATE_WEBHOOKS_BACKOFF', doc: 'delay before the first retry of a failed delivery, doubled each time' },
  'webhooks.maxBackoff': { kind: 'duration', env: 'KEYGATE_WEBHOOKS_MAX_BACKOFF', doc: 'longest delay between retries' },
  'webhooks.maxAttempts': { kind: 'int', env: 'KEYGATE_WEBHOOKS_MAX_ATTEMPTS', doc: 'attempts per delivery before it is given up (logged at error)' },
  'webhooks.pollInterval': { kind: 'duration', env: 'KEYGATE_WEBHOOKS_POLL_INTERVAL', doc: 'how often the delivery queue is checked' },
  'nginx.authSecret': { kind: 'string', env: 'KEYGATE_NGINX_AUTH_SECRET', doc: 'shared secret nginx sends in X-Keygate-Secret to GET /auth/nginx; empty = endpoint disabled', secret: true },
};

export class ConfigError extends Error {
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super(`invalid setting ${setting}: ${message}`);
    this.name = 'ConfigError';
  }
}

function coerce(key: string, spec: Spec, raw: unknown, source: string): unknown {
  const bad = (why: string): never => {
    throw new ConfigError(key, `${why} (from ${source}${echoable(spec) ? `: ${JSON.stringify(raw)}` : ''})`);
  };
  switch (spec.kind) {
    case 'string':
      if (typeof raw !== 'string') bad('expected a string');
      return raw;
    case 'bool':
      if (typeof raw === 'boolean') return raw;
      if (typeof raw === 'string' && /^(true|1|yes|on)$/i.test(raw)) return true;
      if (typeof raw === 'string' && /^(false|0|no|off)$/i.test(raw)) return false;
      return bad('expected true or false');
    case 'int':
    case 'port': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d+$/.test(raw.trim()) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n) || n < 0) bad('expected a non-negative integer');
      if (spec.kind === 'port' && n > 65535) bad('expected a port number 0-65535');
      return n;
    }
    case 'duration': {
      const ms = typeof raw === 'number' || typeof raw === 'string' ? parseDuration(raw) : null;
      if (ms === null) bad('expected a duration such as 500ms, 1s, 15m');
      return ms;
    }
    case 'level':
      if (typeof raw !== 'string' || !LEVELS.includes(raw)) bad(`expected one of ${LEVELS.join(', ')}`);
      return raw;
  }
}

function setPath(target: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split('.');
  let node = target;
  for (const p of parts.slice(0, -1)) node = node[p] as Record<string, unknown>;
  node[parts.at(-1)!] = value;
}

function flatten(obj: Record<string, unknown>, prefix = ''): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) Object.assign(out, flatten(v as Record<string, unknown>, key));
    else out[key] = v;
  }
  return out;
}

export interface LoadOptions {
  /** Path of a JSON config file; default `<home>/keygate.json` when `home` is set and that file exists. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Dotted flags, e.g. { 'dbs.redis': 'redis://…' }. */
  flags?: Record<string, unknown>;
}

/** Where a setting's value came from: `default`, `file <path>`, `env <NAME>`, `flag`, or `<other setting>` for a follower left unset. */
export type SettingSource = string;

export interface ResolvedConfig {
  config: Config;
  sources: Record<string, SettingSource>;
  /** The config file read, if any. */
  file: string | null;
}

/** Where each setting of a configuration loadConfig built came from (for what only an explicit setting may do). */
const SOURCES = new WeakMap<Config, Record<string, SettingSource>>();

/** Where a setting's value came from (see SettingSource); undefined for a configuration not built by loadConfig. */
export function settingSource(config: Config, key: string): SettingSource | undefined {
  return SOURCES.get(config)?.[key];
}

/** Builds the configuration; throws ConfigError naming the first bad setting. */
export function loadConfig(options: LoadOptions = {}): Config {
  return resolveConfig(options).config;
}

/** loadConfig, and where each value came from (for `keygate config`). */
export function resolveConfig(options: LoadOptions = {}): ResolvedConfig {
  const config = structuredClone(DEFAULTS) as unknown as Record<string, unknown>;
  const sources: Record<string, SettingSource> = Object.fromEntries(Object.keys(SPECS).map((k) => [k, 'default']));
  const apply = (values: Record<string, unknown>, source: string, sourceOf: (key: string) => SettingSource): void => {
    for (const [key, raw] of Object.entries(values)) {
      if (raw === undefined) continue;
      const spec = SPECS[key];
      if (!spec) throw new ConfigError(key, `unknown setting (from ${source})`);
      setPath(config, key, coerce(key, spec, raw, source));
      sources[key] = sourceOf(key);
    }
  };

  const env = options.env ?? process.env;
  const flags = options.flags ?? {};
  // `home` picks the default config file, so it is known before the file is read (flag, then environment).
  const earlyHome = flags.home ?? env[SPECS.home!.env];
  const homeFile = typeof earlyHome === 'string' && earlyHome !== '' ? join(resolve(earlyHome), CONFIG_FILE_NAME) : null;
  const file = options.file ?? (homeFile && existsSync(homeFile) ? homeFile : undefined);
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError('config', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
    }
    let parsed: unknown;
    try {
      parsed = parseJson(text); // its errors never quote the file, which may hold secrets
    } catch (err) {
      throw new ConfigError('config', `${file} is ${(err as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError('config', `${file} must hold a JSON object`);
    apply(flatten(parsed as Record<string, unknown>), file, () => `file ${file}`);
  }

  const fromEnv: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(SPECS)) if (env[spec.env] !== undefined) fromEnv[key] = env[spec.env];
  apply(fromEnv, 'environment', (key) => `env ${SPECS[key]!.env}`);
  apply(flags, 'command line', () => 'flag');

  // Followers set nowhere take their leader's value: moving a listener moves what clients are told.
  for (const [key, spec] of Object.entries(SPECS)) {
    if (!spec.follows || sources[key] !== 'default') continue;
    setPath(config, key, getPath(config, spec.follows));
    sources[key] = spec.follows;
  }

  const c = config as unknown as Config;
  if (c.home !== '') c.home = resolve(c.home);
  // A relative path typed as a flag means the current directory, as in any command; one in the
  // settings (defaults, file, environment) starts at home, so every command finds the same files.
  // tls.cert and tls.key are comma-separated lists: each entry is a path of its own.
  const place = (key: string, path: string): string => (isAbsolute(path) ? path : sources[key] === 'flag' ? resolve(path) : c.home !== '' ? join(c.home, path) : path);
  for (const [key, spec] of Object.entries(SPECS)) {
    const value = getPath(config, key);
    if (!spec.path || typeof value !== 'string' || value === '') continue;
    setPath(config, key, spec.list ? value.split(',').map((p) => place(key, p.trim())).join(',') : place(key, value));
  }
  // An explicitly empty public host name still means "the hostname".
  for (const p of ['smtp', 'imap', 'pop3'] as const) if (c.public[p].serverName === '') c.public[p].serverName = c.hostname;
  if (c.dbs.redis !== '' && !/^(redis|rediss|redis-sentinel|redis-cluster):\/\//.test(c.dbs.redis)) {
    throw new ConfigError('dbs.redis', 'expected a redis://, rediss://, redis-sentinel:// or redis-cluster:// URL');
  }
  if (c.tls.handshakeTimeout <= 0) throw new ConfigError('tls.handshakeTimeout', 'expected a duration above 0, such as 5s');
  if ((c.tls.cert === '') !== (c.tls.key === '')) throw new ConfigError(c.tls.cert === '' ? 'tls.cert' : 'tls.key', 'tls.cert and tls.key go together');
  validateMailbox(c);
  validateTls(c);
  validateSetup(c.setup);
  if (c.limits.keysPerAccount < MIN_KEYS_PER_ACCOUNT || c.limits.keysPerAccount > MAX_KEYS_PER_ACCOUNT) {
    throw new ConfigError('limits.keysPerAccount', `expected ${MIN_KEYS_PER_ACCOUNT}-${MAX_KEYS_PER_ACCOUNT} (got ${c.limits.keysPerAccount})`);
  }
  validateHttp(c.http);
  validateConsole(c.console);
  validateEvents(c);
  const upstreamProblem = validateUpstreamConfig(c);
  if (upstreamProblem) throw new ConfigError(upstreamProblem.setting, upstreamProblem.message);
  SOURCES.set(c, sources);
  return { config: c, sources, file: file ?? null };
}

/** The value of a dotted setting in a configuration (or in DEFAULTS). */
export function getPath(target: object, key: string): unknown {
  let node: unknown = target;
  for (const p of key.split('.')) node = (node as Record<string, unknown>)[p];
  return node;
}

function validateMailbox(c: Config): void {
  if (c.mailbox !== 'none' && c.mailbox !== 'local') throw new ConfigError('mailbox', `expected none or local (got ${JSON.stringify(c.mailbox)})`);
  if (c.mailbox !== 'local') return;
  // The local mailbox is the default IMAP and POP3 upstream; other servers are reached by domain or account routes.
  for (const p of ['imap', 'pop3'] as const) {
    if (c.upstream[p].host !== '') throw new ConfigError(`upstream.${p}.host`, `the local mailbox is the default ${p.toUpperCase()} upstream: leave upstream.${p}.host empty with mailbox local (route other domains with upstream.domains)`);
  }
  if (c.mailboxDir === '') throw new ConfigError('mailboxDir', 'expected a directory for the local mailbox');
  if (c.mailboxDovecot === '') throw new ConfigError('mailboxDovecot', 'expected the dovecot program');
}

const MIN_TICKET_ROTATION = 60_000;
/** RFC 8446 §4.6.1: a ticket lives at most 7 days. */
const MAX_TICKET_ROTATION = 7 * 24 * 60 * 60_000;

function validateTls(c: Config): void {
  const r = c.tls.ticketKeyRotation;
  if (r < MIN_TICKET_ROTATION || r > MAX_TICKET_ROTATION) throw new ConfigError('tls.ticketKeyRotation', `expected a duration from 1m to 7d (got ${r} ms)`);
  const problem = acmeProblem(c.hostname, c.tls.acme);
  if (problem) throw new ConfigError(problem.setting, problem.message);
}

function validateHttp(h: Config['http']): void {
  if (h.maxConnections < 1) throw new ConfigError('http.maxConnections', 'expected at least 1');
  for (const k of ['headersTimeout', 'idleTimeout', 'requestTimeout'] as const) if (h[k] <= 0) throw new ConfigError(`http.${k}`, 'expected a duration above 0');
  if (h.headersTimeout > h.requestTimeout) throw new ConfigError('http.headersTimeout', 'must not exceed http.requestTimeout');
}

/** Longest allowed setup-link lifetime: the link carries a key until it is used. */
const MAX_SETUP_LINK_TTL = 24 * 60 * 60_000;

function validateSetup(s: Config['setup']): void {
  if (s.linkTtl <= 0 || s.linkTtl > MAX_SETUP_LINK_TTL) throw new ConfigError('setup.linkTtl', `expected a duration from 1ms to 24h (got ${s.linkTtl} ms)`);
  if ((s.signingCert === '') !== (s.signingKey === '')) {
    throw new ConfigError(s.signingCert === '' ? 'setup.signingCert' : 'setup.signingKey', 'setup.signingCert and setup.signingKey go together');
  }
  if (s.publicUrl !== '') {
    let url: URL | null = null;
    try {
      url = new URL(s.publicUrl);
    } catch {
      url = null;
    }
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
      // The value is not echoed: a URL with user:password@ is one of the refused forms.
      throw new ConfigError('setup.publicUrl', 'expected an http(s) origin such as https://keygate.example.com, without user, password, query or fragment');
    }
  }
}

function validateEvents(c: Config): void {
  const e = c.events;
  if (e.historyMax < 1 || e.historyMax > 10_000) throw new ConfigError('events.historyMax', `expected 1 to 10000 (got ${e.historyMax})`);
  if (e.historyRetention <= 0) throw new ConfigError('events.historyRetention', 'expected a positive duration');
  if (e.newNetworkV4Prefix < 8 || e.newNetworkV4Prefix > 32) throw new ConfigError('events.newNetworkV4Prefix', 'expected 8 to 32');
  if (e.newNetworkV6Prefix < 16 || e.newNetworkV6Prefix > 128) throw new ConfigError('events.newNetworkV6Prefix', 'expected 16 to 128');
  if (e.expiryScanInterval <= 0) throw new ConfigError('events.expiryScanInterval', 'expected a positive duration');
  if (e.failureWindow <= 0) throw new ConfigError('events.failureWindow', 'expected a positive duration');
  const w = c.webhooks;
  if (w.timeout <= 0) throw new ConfigError('webhooks.timeout', 'expected a positive duration');
  if (w.pollInterval <= 0) throw new ConfigError('webhooks.pollInterval', 'expected a positive duration');
  if (w.backoff <= 0 || w.maxBackoff < w.backoff) throw new ConfigError('webhooks.maxBackoff', 'expected at least webhooks.backoff, both positive');
  if (w.maxAttempts < 1) throw new ConfigError('webhooks.maxAttempts', 'expected at least 1');
  const problem = configuredEndpointsProblem(w.endpoints);
  if (problem) throw new ConfigError('webhooks.endpoints', problem);
}

function validateConsole(c: Config['console']): void {
  if (c.idleTimeout <= 0) throw new ConfigError('console.idleTimeout', 'expected a positive duration');
  if (c.absoluteTimeout < c.idleTimeout) throw new ConfigError('console.absoluteTimeout', 'expected at least console.idleTimeout');
  if (c.linkTtl <= 0 || c.linkTtl > MAX_SETUP_LINK_TTL) throw new ConfigError('console.linkTtl', `expected a duration from 1ms to 24h (got ${c.linkTtl} ms)`);
  const { issuer, clientId, clientSecret } = c.oidc;
  if (issuer === '') return;
  let url: URL | null = null;
  try {
    url = new URL(issuer);
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) throw new ConfigError('console.oidc.issuer', `expected an http(s) URL (got ${JSON.stringify(issuer)})`);
  if (clientId === '') throw new ConfigError('console.oidc.clientId', 'needed with console.oidc.issuer');
  if (clientSecret === '') throw new ConfigError('console.oidc.clientSecret', 'needed with console.oidc.issuer');
}

/** Every environment variable the config module reads (used by deployment-file checks). */
export function knownEnvVars(): string[] {
  return [...Object.values(SPECS).map((s) => s.env), 'KEYGATE_CONFIG'];
}
