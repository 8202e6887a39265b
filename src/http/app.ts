import { readFileSync, statSync } from 'node:fs';
import type tls from 'node:tls';
import { resolve } from 'node:path';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import cookie from '@fastify/cookie';
import addFormats from 'ajv-formats';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Authenticator } from '../auth/authenticate.js';
import { ConfigError, type Config } from '../config.js';
import { createConsole } from '../console/index.js';
import type { KeyEvents } from '../events/types.js';
import type { Webhooks } from '../events/webhooks.js';
import { MalformedBlobError } from '../keys/export-codec.js';
import { UnknownScopeError } from '../keys/scopes.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { GrantError } from '../services/key-writes.js';
import { InputError } from '../services/keys.js';
import { checkSigner, MobileconfigError, type ProfileSigner } from '../setup/mobileconfig.js';
import { MemorySetupLinkBackend, RedisSetupLinkBackend, SetupLinkCapacityError, SetupLinks } from '../setup/setup-links.js';
import { ConflictError, InvalidCursorError, KeyLimitError, NotFoundError, StoreUnavailableError } from '../store/errors.js';
import { createRedisClient, waitReady, type RedisClient } from '../store/redis-connect.js';
import type { KeyStore } from '../store/types.js';
import type { TlsProvider } from '../tls/index.js';
import { capConnections } from './connection-cap.js';
import { errorBody, HttpError, rawErrorResponse, type HttpErrorCode } from './errors.js';
import { validationDetails } from './validation.js';
import { authPlugin } from './plugins/auth.js';
import { docsPlugin } from './plugins/docs.js';
import { rateLimitPlugin } from './plugins/rate-limit.js';
import { acmeChallengeRoutes } from './routes/acme-challenge.js';
import { accountRoutes } from './routes/accounts/index.js';
import { accountUpstreamRoutes } from './routes/accounts/upstream.js';
import { clientSetupRoutes } from './routes/client-setup/index.js';
import { leakRoutes } from './routes/leaks.js';
import { nginxAuthRoutes } from './routes/nginx-auth.js';
import { oauthRoutes } from './routes/oauth/index.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoutes } from './routes/metrics.js';
import { credentialRoutes } from './routes/smtp-credentials/index.js';
import { eventRoutes } from './routes/events/index.js';
import { webhookRoutes } from './routes/webhooks/index.js';
import { tokenRoutes } from './routes/tokens/index.js';

export interface AppDeps {
  config: Config;
  store: KeyStore;
  logger: Logger;
  metrics: Metrics;
  authenticator: Authenticator;
  /** Where routes raise key events; default the store's (`eventsOf`), else none. */
  events?: KeyEvents;
  /** Webhook endpoints (`/api/webhooks`); without them those routes answer 503. */
  webhooks?: Webhooks;
  /** Prefix of the rate-limit counters in Redis (when `dbs.redis` is set); tests use their own. */
  rateLimitNamespace?: string;
  /**
   * The TLS certificate, whose pair signs Apple profiles unless `setup.signingCert`
   * is set (without either, profile and setup-link requests get 503); with
   * `http.tls` also what HTTPS serves, and ACME's HTTP-01 answers.
   */
  tls?: Pick<TlsProvider, 'certPem' | 'keyPem'> & Partial<Pick<TlsProvider, 'httpsOptions' | 'attach' | 'acmeChallenges'>>;
  /** Overrides the profile signer (tests). */
  signer?: ProfileSigner | (() => ProfileSigner | null);
  /**
   * One-time setup links. Default: in Redis when `dbs.redis` is set (so any
   * instance can serve a link another made), else in memory; closed with the app.
   * A service passed here stays the caller's to close.
   */
  setupLinks?: SetupLinks;
}

/** Builds the control plane. `server.ts` only listens; tests use `app.inject`. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, store, logger, metrics, authenticator } = deps;
  // Profiles are signed with setup.signingCert, else the (possibly renewed) TLS pair. A bad signing pair stops start-up here.
  const signer = deps.signer !== undefined ? (typeof deps.signer === 'function' ? deps.signer : constant(deps.signer)) : profileSigner(config, deps.tls);
  const https = config.http.tls ? deps.tls : undefined;
  if (config.http.tls && !https?.httpsOptions) throw new ConfigError('http.tls', 'HTTPS needs the TLS certificates (no TLS provider given)');
  const app = Fastify({
    // Every connection is bounded in time: headers (from connect, so a silent one too), a whole request, an idle keep-alive.
    // Fastify passes `http` only to a plain server, so HTTPS gets the same bounds in its own options.
    ...(https?.httpsOptions
      ? { https: { ...https.httpsOptions(), headersTimeout: config.http.headersTimeout, connectionsCheckingInterval: CONNECTION_CHECK_MS } }
      : { http: { headersTimeout: config.http.headersTimeout, connectionsCheckingInterval: CONNECTION_CHECK_MS } }),
    loggerInstance: logger,
    bodyLimit: config.http.bodyLimit,
    trustProxy: config.http.trustProxy,
    requestTimeout: config.http.requestTimeout,
    keepAliveTimeout: config.http.idleTimeout,
    clientErrorHandler: (err: NodeJS.ErrnoException, socket) => answerClientError(err, socket, logger, metrics),
    frameworkErrors: answerRouterError,
    ajv: {
      customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: true, useDefaults: true },
      plugins: [addFormats as never],
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Clients often send `Content-Type: application/json` with no body on POST …/rotate: treat that as no body.
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) =>
    body === '' ? done(null, undefined) : json(req, body as string, done),
  );

  app.setErrorHandler((error: unknown, req, reply) => {
    const err = error as FastifyError;
    const send = (status: number, code: string, message: string, details?: unknown) => reply.code(status).send(errorBody(code, message, details));
    if (error instanceof HttpError) return send(error.status, error.code, error.message, error.details);
    if (err.validation) {
      const details = validationDetails(err, req);
      // One problem is the message itself (as the CLI would say it); several are listed in details.
      return send(400, 'validation', details.length === 1 ? details[0]!.message : 'The request is not valid', details);
    }
    if (error instanceof InputError) return send(400, 'validation', error.message, error.field ? [{ field: `body.${error.field}`, message: error.message }] : undefined);
    if (error instanceof UnknownScopeError) return send(400, 'validation', err.message, [{ field: 'body.scopes', message: err.message }]);
    if (error instanceof MalformedBlobError) return send(400, 'validation', err.message, [{ field: 'body.blob', message: err.message }]);
    if (error instanceof GrantError) {
      return send(403, 'forbidden', error.message, error.reason === 'missing_scope' ? { missingScope: error.missing[0], missingScopes: error.missing } : undefined);
    }
    if (error instanceof NotFoundError) return send(404, 'not_found', 'Not found');
    if (error instanceof InvalidCursorError) return send(400, 'validation', error.message, [{ field: 'querystring.cursor', message: error.message }]);
    if (error instanceof KeyLimitError) return send(409, 'key_limit', error.message, { limit: error.limit, account: error.account });
    if (error instanceof ConflictError) return send(409, 'conflict', err.message);
    if (error instanceof StoreUnavailableError) {
      req.log.error({ err }, 'store unavailable');
      return send(503, 'store_unavailable', 'The key store is unavailable; retry later');
    }
    if (error instanceof MobileconfigError) {
      req.log.error({ err }, 'cannot build an Apple profile');
      return send(503, 'setup_unavailable', error.message);
    }
    if (error instanceof SetupLinkCapacityError) {
      req.log.warn('setup links full');
      return send(503, 'setup_unavailable', error.message);
    }
    if (err.statusCode === 429) return send(429, 'rate_limited', 'Too many requests; retry later');
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return send(413, 'payload_too_large', 'The request body is too large');
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return send(415, 'unsupported_media_type', 'Unsupported content type');
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return send(err.statusCode, 'bad_request', err.message);
    req.log.error({ err }, 'unhandled error');
    return send(500, 'internal', 'Internal error');
  });
  capConnections(app.server, config.http.maxConnections, {
    refused: (reason) => metrics.connectionsRefused.inc({ listener: 'http', reason }),
    counted: (delta) => metrics.httpConnections.inc(delta),
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send(errorBody('not_found', `No route ${req.method} ${req.url.split('?')[0]}`)));

  if (https?.attach && https.httpsOptions) {
    // New certificates (renewed, reloaded) and ticket keys reach clients without SNI too.
    const detach = https.attach(app.server as unknown as tls.Server, https.httpsOptions);
    app.addHook('onClose', async () => void detach());
    // One year; no includeSubDomains: other names under the domain may not serve HTTPS.
    app.addHook('onRequest', async (_req, reply) => void reply.header('strict-transport-security', 'max-age=31536000'));
  }

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    metrics.httpRequests.inc({ route, status: String(reply.statusCode) });
    metrics.httpDuration.observe({ route, status_class: `${Math.floor(reply.statusCode / 100)}xx` }, reply.elapsedTime / 1000);
  });

  // Rate-limit counters and pending setup links live where the keys live: shared in Redis, in-process with SQLite.
  let redis: RedisClient | null = null;
  if (config.dbs.redis !== '') {
    redis = createRedisClient(config.dbs.redis, { connectionName: 'keygate-rate-limit' });
    redis.on('error', () => {}); // failed commands are handled (and logged) by the limiter and the setup routes
    await waitReady(redis, 3000); // limits fail open (and log) until Redis answers
    app.addHook('onClose', async () => {
      await redis!.quit().catch(() => redis!.disconnect());
    });
  }

  let links = deps.setupLinks ?? null;
  if (!links) {
    links = new SetupLinks(redis ? new RedisSetupLinkBackend(redis) : new MemorySetupLinkBackend(), { ttlMs: config.setup.linkTtl });
    const owned = links;
    app.addHook('onClose', async () => {
      await owned.close();
    });
  }
  const publicUrl = config.setup.publicUrl === '' ? undefined : config.setup.publicUrl;
  const setup = { signer, links, ...(publicUrl !== undefined && { publicUrl }) };

  try {
    // Order matters: docs (OpenAPI collects routes registered after it), the one
    // auth hook, rate limits (they attach to routes as they are registered), routes.
    await app.register(docsPlugin);
    const webConsole = createConsole({ config, store, logger, metrics, authenticator });
    await app.register(cookie);
    await app.register(authPlugin, { authenticator, sessions: webConsole.sessionAuth });
    await app.register(rateLimitPlugin, { config, metrics, redis, namespace: deps.rateLimitNamespace ?? 'keygate:rl:' });
    await app.register(healthRoutes, { store });
    await app.register(metricsRoutes, { metrics });
    await app.register(oauthRoutes, { store, canary: authenticator.canary });
    await app.register(credentialRoutes, { store, config, mode: 'own', setup });
    await app.register(credentialRoutes, { store, config, mode: 'admin', setup });
    await app.register(accountRoutes, { store });
    await app.register(eventRoutes, { store, config, mode: 'own' });
    await app.register(eventRoutes, { store, config, mode: 'admin' });
    await app.register(webhookRoutes, { webhooks: deps.webhooks });
    await app.register(accountUpstreamRoutes, { store, config });
    await app.register(tokenRoutes, { store });
    await app.register(clientSetupRoutes, { config, links, ...(publicUrl !== undefined && { publicUrl }) });
    // nginx's mail proxy asks here; guarded by nginx.authSecret, limits and audit as the listeners.
    await app.register(nginxAuthRoutes, { config, authenticator });
    await app.register(leakRoutes, { config, store });
    await app.register(webConsole.plugin);
    if (deps.tls?.acmeChallenges) await app.register(acmeChallengeRoutes, { challenges: deps.tls.acmeChallenges });
  } catch (err) {
    redis?.disconnect();
    throw err;
  }
  return app as unknown as FastifyInstance;
}

/** The router's own refusals (a URL part over the length limit, a malformed escape) in the one error shape; never quoting the URL. */
function answerRouterError(err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void {
  const e =
    err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? new HttpError('uri_too_long') : err.code === 'FST_ERR_BAD_URL' ? new HttpError('bad_request', 'The URL is not valid') : new HttpError('internal');
  void reply.code(e.status).send(errorBody(e.code, e.message));
}

/** How often the server checks headers and request timeouts (Node's default, 30 s, would let them run 30 s late). */
const CONNECTION_CHECK_MS = 1000;

/**
 * Answers what Node's parser refuses before Fastify sees a request (a timeout,
 * headers too large, a malformed request) in the one JSON error shape. Logs
 * the error's code only: the error carries the raw bytes received, which may
 * hold a key.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: import('node:stream').Duplex, logger: Logger, metrics: Metrics): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
  if (timeout) metrics.connectionsRefused.inc({ listener: 'http', reason: 'request_timeout' });
  logger.debug({ code: err.code }, 'client error');
  const code: HttpErrorCode = timeout ? 'request_timeout' : err.code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : 'bad_request';
  if (socket.writable) socket.end(rawErrorResponse(code));
  socket.destroy();
}

function constant<T>(value: T): () => T {
  return () => value;
}

/**
 * The profile signer: the files `setup.signingCert` / `setup.signingKey`
 * (checked now, a bad pair stops start-up naming the setting; re-read when
 * they change on disk), else the TLS provider's current pair, else none.
 */
export function profileSigner(config: Pick<Config, 'setup'>, tls?: Pick<TlsProvider, 'certPem' | 'keyPem'>): () => ProfileSigner | null {
  const { signingCert, signingKey } = config.setup;
  if (signingCert === '' && signingKey === '') return tls ? () => ({ certPem: tls.certPem(), keyPem: tls.keyPem() }) : () => null;
  if (signingCert === '' || signingKey === '') throw new ConfigError(signingCert === '' ? 'setup.signingCert' : 'setup.signingKey', 'setup.signingCert and setup.signingKey go together');
  const certPath = resolve(signingCert);
  const keyPath = resolve(signingKey);
  const signature = () => [certPath, keyPath].map((p) => {
    try {
      const s = statSync(p);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return 'missing';
    }
  }).join('|');
  const load = (): ProfileSigner => {
    let certPem: string;
    let keyPem: string;
    try {
      certPem = readFileSync(certPath, 'utf8');
    } catch (err) {
      throw new ConfigError('setup.signingCert', `cannot read ${certPath}: ${(err as Error).message}`);
    }
    try {
      keyPem = readFileSync(keyPath, 'utf8');
    } catch (err) {
      throw new ConfigError('setup.signingKey', `cannot read ${keyPath}: ${(err as Error).message}`);
    }
    try {
      checkSigner({ certPem, keyPem });
    } catch (err) {
      throw new ConfigError('setup.signingCert', `${certPath} with ${keyPath} cannot sign profiles: ${(err as Error).message}`);
    }
    return { certPem, keyPem };
  };
  let seen = signature();
  let current = load();
  return () => {
    const now = signature();
    if (now !== seen) {
      // A renewal in progress (one file written, not the other) keeps the last good pair.
      try {
        current = load();
        seen = now;
      } catch {
        /* keep the last good pair; the next request tries again */
      }
    }
    return current;
  };
}

